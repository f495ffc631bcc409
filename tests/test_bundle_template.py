"""The bundles are generated from one template and a recipe each, resolve as configs, run from a copy anywhere, and
take their spacing from the data.

Training, evaluation and inference of every bundle (with ``check_properties``) run in ``test_bundles_real.py`` and
``test_bundles_synthetic.py``; here the configs are checked without data, and a copied bundle trains for real.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tifffile
from monai.bundle import ConfigWorkflow
from monai.utils import BundleProperty, BundlePropertyConfig

from monai_embedseg.bundle import generate
from monai_embedseg.bundle.paths import BUNDLES_DIR, bundle_path, bundle_workflow
from monai_embedseg.data.synthetic import write_synthetic_dataset
from monai_embedseg.transforms import GenerateCenterImaged

REPO = Path(__file__).resolve().parents[1]
CONFIG_SETS = {  # workflow type -> its run ids and the config files merged, as the bundles' docs run them
    "train": (
        ["training", "prepare"],
        [["train.json"], ["train.json", "multi_gpu_train.json"], ["train.json", "train_fast.json"]],
    ),
    "eval": (["evaluating"], [["train.json", "evaluate.json"]]),
    "infer": (["inference"], [["inference.json"]]),
}


def test_committed_bundles_match_their_template_and_recipes(capsys):
    assert generate.main(["--check"]) == 0, capsys.readouterr().out[-3000:]
    assert sorted(p.name for p in BUNDLES_DIR.iterdir() if (p / "configs").is_dir()) == generate.recipe_names()


def test_check_names_the_edited_and_stale_files_and_generate_restores_them(tmp_path, capsys):
    bundles = tmp_path / "bundles"
    for name in generate.recipe_names():
        shutil.copytree(BUNDLES_DIR / name / "configs", bundles / name / "configs")
    edited = bundles / "synthetic_3d" / "configs" / "inference.json"
    edited.write_text(edited.read_text().replace('"tta": true', '"tta": false'))
    stale = bundles / "synthetic_2d" / "configs" / "train_fast.json"  # synthetic_2d has no fast profile
    shutil.copy(bundles / "dsb2018" / "configs" / "train_fast.json", stale)

    assert generate.main(["--check", "--bundles-dir", str(bundles)]) == 1
    out = capsys.readouterr().out
    named = {line.split()[0] for line in out.splitlines() if line.endswith("writes")}
    assert named == {str(edited), str(stale)}, out
    assert '-    "tta": false,' in out and '+    "tta": true,' in out  # the diff shows what changed
    assert generate.main(["--bundles-dir", str(bundles), "synthetic_2d", "synthetic_3d"]) == 0
    assert not stale.exists() and '"tta": true' in edited.read_text()
    assert generate.main(["--check", "--bundles-dir", str(bundles)]) == 0


@pytest.mark.parametrize(
    "recipe, message",
    [
        ({"train": {"epoch": 3}}, "'epoch' is not an id of template/train.json"),
        ({"train": {"validate#inferer#sw_batchsize": 2}}, "'validate#inferer#sw_batchsize' is not an id"),
        ({"trian": {}}, "unknown section(s) ['trian']"),
        ({"common": {"nonsense": 1}}, "common id 'nonsense' is in none of the template's"),
        ({"common": {"roi_size": [64, 64]}, "train": {"roi_size": [32, 32]}}, "['roi_size'] set both in 'common'"),
        ({"metadata": {"nme": "x"}}, "'nme' is not an id of template/metadata.json"),
    ],
)
def test_recipe_errors_name_the_problem_and_the_recipe(recipe, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(generate, "RECIPE_DIR", tmp_path)
    (tmp_path / "bad.json").write_text(json.dumps(recipe))
    with pytest.raises(generate.RecipeError) as info:
        generate.render_bundle("bad")
    assert message in str(info.value) and str(tmp_path / "bad.json") in str(info.value)
    assert generate.main(["--check", "bad"]) == 2 and message in capsys.readouterr().err


def test_a_recipe_reaches_nested_ids_and_ids_written_with_hashes(tmp_path, monkeypatch):
    monkeypatch.setattr(generate, "RECIPE_DIR", tmp_path)
    recipe = {
        "train": {"validate#inferer#sw_batch_size": 2, "train#preprocessing#transforms#9#prob": 0.5},
        "evaluate": {"validate#tta": False},  # a top-level key "validate#tta" in evaluate.json
        "train_fast": {"train#handlers#0#epoch_level": True},
    }
    (tmp_path / "mine.json").write_text(json.dumps(recipe))
    files = {name: json.loads(text) for name, text in generate.render_bundle("mine").items() if name.endswith("json")}
    assert files["train.json"]["validate"]["inferer"]["sw_batch_size"] == 2
    assert files["train.json"]["train"]["preprocessing"]["transforms"][9]["prob"] == 0.5
    assert files["evaluate.json"]["validate#tta"] is False
    assert files["train_fast.json"]["train#handlers#0#epoch_level"] is True
    assert "mine.json" in files["train.json"]["_generated_"] and "mine.json" in files["metadata.json"]["generated_by"]


def test_an_unknown_bundle_is_refused_with_the_known_ones(capsys):
    assert generate.main(["--check", "synthetic_4d"]) == 2
    err = capsys.readouterr().err
    assert "unknown bundle 'synthetic_4d'" in err and "synthetic_2d" in err and "recipes/synthetic_4d.json" in err


@pytest.mark.parametrize("bundle", generate.recipe_names())
def test_every_config_resolves_and_has_the_workflow_properties(bundle):
    """Every config (and every merge the docs use) resolves without running anything: what its run ids and MONAI's
    workflow properties refer to exists (no dangling ``@`` reference); the required property ids are all there."""
    configs = Path(bundle_path(bundle)) / "configs"
    for kind, (run_ids, sets) in CONFIG_SETS.items():
        for files in sets:
            if not all((configs / f).is_file() for f in files):
                assert "train_fast.json" in files  # only the fast profile is optional
                continue
            wf = ConfigWorkflow(config_file=[str(configs / f) for f in files], workflow_type=kind, logging_file=False)
            missing = [
                p[BundlePropertyConfig.ID]
                for p in wf.properties.values()
                if p.get(BundleProperty.REQUIRED) and p.get(BundlePropertyConfig.ID) not in wf.parser
            ]
            assert missing == [], (files, missing)
            properties = [p[BundlePropertyConfig.ID] for p in wf.properties.values()]
            used = ["initialize", "run", *run_ids, "finalize", *properties]
            for config_id in filter(wf.parser.__contains__, used):  # and all they refer to
                wf.parser.get_parsed_content(config_id, instantiate=False, eval_expr=False)
            generated_by = wf.parser["_generated_"]
            assert f"monai_embedseg/bundle/recipes/{bundle}.json" in generated_by and "edit those" in generated_by


def _bundle_output_dir(config_file: str, **overrides) -> str:
    """``output_dir`` as the running workflow resolves it (``bundle_root`` + ``/models``)."""
    wf = ConfigWorkflow(
        config_file=config_file, workflow_type=None, run_id="output_dir", logging_file=False, **overrides
    )
    wf.initialize()
    return wf.run()[0]


def test_bundle_root_is_the_folder_of_the_running_config(tmp_path, monkeypatch):
    copy = tmp_path / "copy"
    shutil.copytree(BUNDLES_DIR / "synthetic_2d" / "configs", copy / "configs")
    monkeypatch.chdir(REPO)
    assert _bundle_output_dir("bundles/synthetic_2d/configs/train.json") == str(BUNDLES_DIR / "synthetic_2d" / "models")
    assert _bundle_output_dir(str(copy / "configs" / "inference.json")) == str(copy / "models")
    monkeypatch.chdir(copy)
    assert _bundle_output_dir("configs/train.json") == str(copy / "models")
    assert _bundle_output_dir("configs/train.json", bundle_root=str(tmp_path)) == str(tmp_path / "models")


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_copied_bundle_trains_and_writes_under_itself(tmp_path):
    shipped = BUNDLES_DIR / "synthetic_2d"
    copy = tmp_path / "synthetic_2d"
    shutil.copytree(shipped, copy, ignore=shutil.ignore_patterns("models", "data"))
    before = _tree(shipped)
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "training",
        "--config_file",
        "configs/train.json",
        "--epochs",
        "1",
        "--val_interval",
        "1",
        "--num_samples",
        "2",
        "--roi_size",
        "[64,64]",
        "--tune_thresholds",
        "false",
        "--synthetic_kwargs",
        "{'n_train': 4, 'n_test': 2, 'shape': [64, 64], 'seed': 3}",
    ]
    path = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])  # this checkout's package
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path)
    result = subprocess.run(cmd, cwd=copy, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (copy / "models" / "model.pt").is_file() and (copy / "models" / "checkpoint_epoch=1.pt").is_file()
    assert (copy / "data" / "train" / "images").is_dir()  # the synthetic data was generated inside the copy
    assert _tree(shipped) == before  # nothing written into the repository


def _spacings(parser) -> dict:
    """The spacing each component of a parsed bundle config received."""
    if "train" in parser:  # training / evaluation config
        xs = parser.get_parsed_content("train#preprocessing").transforms
        return {
            "loss": list(parser.get_parsed_content("loss").spacing),
            "medoids": list(next(t for t in xs if isinstance(t, GenerateCenterImaged)).generator.spacing),
            "inferer": list(parser.get_parsed_content("validate#inferer").spacing),
            "clustering": list(parser.get_parsed_content("validate#postprocessing").transforms[0].cluster.spacing),
            "threshold_search": list(parser.get_parsed_content("threshold_search").spacing),
        }
    return {
        "inferer": list(parser.get_parsed_content("inferer").spacing),
        "clustering": list(parser.get_parsed_content("postprocessing").transforms[0].cluster.spacing),
    }


def _write_anisotropic_cells(data) -> None:
    """A tiny 3D synthetic dataset whose TIFFs record the spacing (2, 1, 1)."""
    write_synthetic_dataset(
        str(data),
        "cells_3d",
        n_train=3,
        n_test=1,
        seed=1,
        shape=(8, 32, 32),
        n_objects=(2, 3),
        radius=(5, 7),
        z_anisotropy=2,
    )


def test_spacing_comes_from_the_data_and_an_override_wins(tmp_path):
    data = tmp_path / "data"
    _write_anisotropic_cells(data)  # the TIFFs record spacing (2, 1, 1)
    for overrides, expected in (({}, [2.0, 1.0, 1.0]), ({"spacing": [4.0, 0.5, 0.5]}, [4.0, 0.5, 0.5])):
        out = tmp_path / f"out{len(overrides)}"
        wf = bundle_workflow(
            "synthetic_3d", "train", ["train.json"], dataset_dir=str(data), output_dir=str(out), **overrides
        )
        wf.initialize()
        assert set(map(tuple, _spacings(wf.parser).values())) == {tuple(expected)}, overrides
        assert not out.exists()  # building the workflow writes nothing; its run writes the properties first
        wf.parser.get_parsed_content("run#1")  # save_run_properties, after the data checks
        assert json.loads((out / "dataset_properties.json").read_text())["spacing"] == expected
        # inference reads the spacing training recorded; an inference override wins there too
        wf = bundle_workflow("synthetic_3d", "infer", ["inference.json"], dataset_dir=str(data), output_dir=str(out))
        wf.initialize()
        assert set(map(tuple, _spacings(wf.parser).values())) == {tuple(expected)}
    wf = bundle_workflow(
        "synthetic_3d", "infer", ["inference.json"], dataset_dir=str(data), output_dir=str(out), spacing=[1.5, 1.0, 1.0]
    )
    wf.initialize()
    assert set(map(tuple, _spacings(wf.parser).values())) == {(1.5, 1.0, 1.0)}


def test_a_bundle_default_spacing_fills_in_for_masks_that_record_none(tmp_path):
    data = tmp_path / "data"
    _write_anisotropic_cells(data)
    for path in data.glob("*/masks/*.tif"):  # like the release archives: no spacing in the files
        tifffile.imwrite(path, tifffile.imread(path))
    wf = bundle_workflow(
        "mouse_skull_nuclei_cbg",
        "train",
        ["train.json"],
        dataset_dir=str(data),
        output_dir=str(tmp_path / "out"),
        crop_size=[8, 32, 32],
    )
    wf.initialize()
    assert set(map(tuple, _spacings(wf.parser).values())) == {(0.2, 0.073, 0.073)}  # the recipe's default_spacing
    wf.parser.get_parsed_content("run#1")  # save_run_properties
    props = json.loads((tmp_path / "out" / "dataset_properties.json").read_text())
    assert props["spacing_source"] == "default"
