"""Open napari with the EmbedSeg widget docked, segment the generated 2D nuclei sample with the shipped model, and
save a screenshot of the window.

Needs a display: ``xvfb-run -a python tutorials/napari_screenshot.py --output tutorials/napari_widget.png`` on a
machine without one. Prints one line: the widget docked and the number of objects found. The tests run it (without
``--output``) as the real-viewer check.
"""

from __future__ import annotations

import argparse
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", default=None, help="PNG of the napari window")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the segmentation")
    args = parser.parse_args(argv)

    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=args.output is not None, title="napari: EmbedSeg")
    try:
        viewer.window.resize(1500, 860)
        viewer.open_sample("monai_embedseg", "nuclei_2d")
        _, widget = viewer.window.add_plugin_dock_widget("monai_embedseg", "EmbedSeg")
        widget.tta_check.setChecked(False)
        widget.image_combo.setCurrentText("nuclei 2D")
        widget.segment()
        deadline = time.monotonic() + args.timeout
        while widget._worker is not None and time.monotonic() < deadline:
            QApplication.processEvents()
            time.sleep(0.02)
        labels = viewer.layers["nuclei 2D labels"].data if "nuclei 2D labels" in viewer.layers else None
        if labels is None:
            raise SystemExit(f"no labels layer after segmenting: {widget.status.text()}")
        if args.output:
            viewer.layers["nuclei 2D labels"].opacity = 0.5
            viewer.reset_view()
            for _ in range(20):  # let the canvas draw the new layer
                QApplication.processEvents()
                time.sleep(0.05)
            viewer.screenshot(path=args.output, canvas_only=False)
        print(f"docked EmbedSeg; segmented the 2D sample: {int(labels.max())} objects ({widget.status.text()})")
    finally:
        viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
