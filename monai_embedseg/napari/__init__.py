"""napari plugin (``pip install monai_embedseg[napari]``): a dock widget that segments the active image with a
pretrained model, a trained bundle or an exported network, re-clusters the cached network output live as the
thresholds move, and trains or fine-tunes the model from labels painted in the viewer; plus generated sample data.

The manifest is ``napari.yaml`` (npe2, entry point ``napari.manifest``). The work itself is Qt-free and usable
without napari: :class:`monai_embedseg.segmenter.Segmenter` and
:func:`monai_embedseg.bundle.train_on_arrays.train_on_arrays`.
"""
