"""fer_hf.data.transforms: decoding, the per-batch transform (eval and augmented) and the collator, on real faces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fer_hf.configs import Augment
from fer_hf.data.decode import FerTensorDataset, decode_images
from fer_hf.data.transforms import BatchMixer, BatchTransform, FerCollator

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@pytest.fixture(scope="module")
def faces(bundled_dd) -> torch.Tensor:
    """16 real FER2013 faces, uint8 (16, 48, 48)."""
    return decode_images(bundled_dd["validation"].select(range(0, 70, 4)))[:16]


def unnormalise(x: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    return x * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)


def test_decode_images_matches_pil(bundled_dd, monkeypatch):
    from PIL import Image

    monkeypatch.setattr("fer_hf.data.decode.DECODE_BLOCK", 5)  # 12 rows in 3 blocks on the decode threads
    ds = bundled_dd["train"].select(range(12))
    images = decode_images(ds)
    assert images.dtype == torch.uint8 and images.shape == (12, 48, 48)
    for i in range(12):
        expected = np.asarray(ds[i]["image"].convert("L"))
        np.testing.assert_array_equal(images[i].numpy(), expected)
    big = ds.cast_column("image", type(ds.features["image"])(decode=True)).map(
        lambda ex: {"image": ex["image"].convert("RGB").resize((96, 96), Image.NEAREST)}
    )
    resized = decode_images(big)  # RGB 96x96 -> gray 48x48
    assert resized.shape == (12, 48, 48)
    assert (resized.float() - images.float()).abs().mean() < 4


def test_eval_path_is_bilinear_upscale_and_normalisation(faces):
    out = BatchTransform(224, 3, MEAN, STD)(faces)
    assert out.shape == (16, 3, 224, 224) and out.dtype == torch.float32
    up = F.interpolate(faces.unsqueeze(1).float() / 255, size=(224, 224), mode="bilinear", align_corners=False)
    expected = (up.expand(-1, 3, -1, -1) - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert not torch.equal(out[:, 0], out[:, 1])  # per-channel normalisation, not a shared plane


def test_native_size_grayscale(faces):
    out = BatchTransform(48, 1, 0.5, 0.5)(faces)
    assert out.shape == (16, 1, 48, 48) and out.dtype == torch.float32
    torch.testing.assert_close(out[:, 0], faces.float() / 255 * 2 - 1, atol=1e-6, rtol=0)
    augmented = BatchTransform(48, 1, 0.5, 0.5, augment=Augment(), train=True)(faces)
    assert augmented.shape == (16, 1, 48, 48)


def test_augment_is_ignored_for_evaluation(faces):
    augment = Augment(hflip=1.0, rotation=30, brightness=0.5, random_erasing=1.0)
    plain = BatchTransform(224, 3, MEAN, STD)(faces)
    torch.testing.assert_close(BatchTransform(224, 3, MEAN, STD, augment=augment, train=False)(faces), plain)


@pytest.mark.parametrize("size", [48, 224])
def test_hflip_mirrors_exactly(faces, size):
    plain = BatchTransform(size, 3, MEAN, STD)(faces)
    flipped = BatchTransform(size, 3, MEAN, STD, augment=Augment(hflip=1.0), train=True)(faces)
    # Exact up to float rounding of the sampling grid (5e-5 after normalisation = 0.003 gray levels).
    torch.testing.assert_close(flipped, plain.flip(-1), atol=5e-5, rtol=0)
    unflipped = BatchTransform(size, 3, MEAN, STD, augment=Augment(hflip=0.0), train=True)(faces)
    torch.testing.assert_close(unflipped, plain, atol=5e-5, rtol=0)


def test_hflip_half_flips_some(faces):
    out = BatchTransform(
        48, 1, 0.0, 1.0, augment=Augment(hflip=0.5), train=True, generator=torch.Generator().manual_seed(0)
    )
    out = out(faces)[:, 0]
    plain = faces.float() / 255
    flipped = [torch.allclose(o, p.flip(-1), atol=1e-5) for o, p in zip(out, plain, strict=True)]
    same = [torch.allclose(o, p, atol=1e-5) for o, p in zip(out, plain, strict=True)]
    assert all(f or s for f, s in zip(flipped, same, strict=True)) and 2 <= sum(flipped) <= 14


def test_brightness_and_contrast_stay_in_range_and_change_images(faces):
    augment = Augment(hflip=0.0, brightness=0.9, contrast=0.9)
    out = BatchTransform(224, 3, MEAN, STD, augment=augment, train=True, generator=torch.Generator().manual_seed(1))
    pixels = unnormalise(out(faces))
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert pixels.min() < 0.01 and pixels.max() > 0.99  # strong jitter reaches the bounds: clamped, not wrapped
    plain = unnormalise(BatchTransform(224, 3, MEAN, STD)(faces))
    assert (pixels.mean(dim=(1, 2, 3)) - plain.mean(dim=(1, 2, 3))).abs().max() > 0.05


def test_sharpness_blends_with_a_blur(faces):
    blur = BatchTransform(48, 1, 0.0, 1.0, augment=Augment(hflip=0.0, sharpness=(0.0, 0.0)), train=True)(faces)
    plain = faces.float().unsqueeze(1) / 255
    inner = blur[..., 1:-1, 1:-1]
    expected = F.conv2d(plain, torch.tensor([[1.0, 1, 1], [1, 5, 1], [1, 1, 1]]).view(1, 1, 3, 3) / 13)
    torch.testing.assert_close(inner, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(blur[..., 0, :], plain[..., 0, :])  # borders kept, as torchvision


def test_rotation_leaves_a_radial_pattern_and_moves_faces(faces):
    yy, xx = np.mgrid[0:48, 0:48] - 23.5
    radius = np.hypot(yy, xx)
    rings = torch.from_numpy((127.5 + 127.5 * np.cos(radius / 2.5)).round().astype(np.uint8)).expand(4, 48, 48)
    augment = Augment(hflip=0.0, rotation=45.0)
    rotate = BatchTransform(224, 1, 0.0, 1.0, augment=augment, train=True, generator=torch.Generator().manual_seed(2))
    plain = BatchTransform(224, 1, 0.0, 1.0)
    inside = torch.from_numpy(np.hypot(*(np.mgrid[0:224, 0:224] - 111.5)) < 90)  # (S, S): the inscribed disc
    difference = (rotate(rings) - plain(rings))[:, 0, inside]
    assert difference.abs().mean() < 0.02  # a rotation-invariant image stays (up to resampling)
    moved = rotate(faces) - plain(faces)
    assert moved.abs().mean() > 0.03  # faces do not


def test_random_erasing_changes_one_rectangle(faces):
    augment = Augment(hflip=0.0, random_erasing=1.0)
    out = BatchTransform(224, 3, MEAN, STD, augment=augment, train=True, generator=torch.Generator().manual_seed(3))
    erased, plain = out(faces), BatchTransform(224, 3, MEAN, STD)(faces)
    for i in range(len(faces)):
        changed = (erased[i] - plain[i]).abs().amax(0) > 1e-3  # (S, S); grid vs interpolate differ ~1e-5
        rows, cols = torch.nonzero(changed, as_tuple=True)
        box = changed[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        area = box.numel() / 224**2
        assert 0.01 < area < 0.34 and box.float().mean() > 0.95  # one filled rectangle of 2-33% of the image
        assert (changed.sum() - box.sum()) == 0
        noise = unnormalise(erased[i : i + 1])[0, :, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert noise.min() >= -1e-5 and noise.max() <= 1 + 1e-5 and noise.std() > 0.2  # uniform noise
        torch.testing.assert_close(noise[0], noise[2])  # gray noise: the same in every channel


def test_seeded_generator_is_reproducible(faces):
    augment = Augment(rotation=15, translate=0.1, scale=(0.8, 1.2), brightness=0.3, contrast=0.3, random_erasing=0.5)

    def run(seed: int) -> torch.Tensor:
        return BatchTransform(
            96, 3, MEAN, STD, augment=augment, train=True, generator=torch.Generator().manual_seed(seed)
        )(faces)

    torch.testing.assert_close(run(7), run(7), atol=0, rtol=0)
    assert not torch.allclose(run(7), run(8))


def test_input_batch_is_not_modified(faces):
    before = faces.clone()
    BatchTransform(48, 1, 0.5, 0.5, augment=Augment(random_erasing=1.0, brightness=0.5), train=True)(faces)
    assert torch.equal(faces, before)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"hflip": 1.5}, "hflip is a probability"),
        ({"random_erasing": -0.1}, "random_erasing is a probability"),
        ({"rotation": -5}, "rotation must be >= 0"),
        ({"brightness": -0.1}, "brightness must be >= 0"),
        ({"scale": (1.2, 0.9)}, "scale must be a range"),
        ({"sharpness": (-1.0, 1.0)}, "sharpness must be a range"),
        ({"mixup_alpha": -0.2}, "mixup_alpha must be >= 0"),
        ({"cutmix_alpha": -1.0}, "cutmix_alpha must be >= 0"),
        ({"mix_prob": 1.5}, "mix_prob is a probability"),
    ],
)
def test_augment_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Augment(**kwargs)


def test_batch_transform_validation():
    with pytest.raises(ValueError, match="channels must be 1"):
        BatchTransform(224, 2, 0.5, 0.5)
    with pytest.raises(ValueError, match="mean has 3 values; expected 1 or 1"):
        BatchTransform(48, 1, MEAN, STD)
    with pytest.raises(ValueError, match="std must be > 0"):
        BatchTransform(48, 1, 0.5, 0.0)


def test_collator_and_tensor_dataset(bundled_dd):
    data = FerTensorDataset.from_split(bundled_dd["validation"])
    assert len(data) == 70 and data.images.shape == (70, 48, 48)
    assert torch.equal(data.labels, torch.tensor(bundled_dd["validation"]["label"]))
    batch = FerCollator(BatchTransform(224, 3, MEAN, STD, augment=Augment(), train=True))([data[i] for i in range(5)])
    assert set(batch) == {"pixel_values", "labels"}
    assert batch["pixel_values"].shape == (5, 3, 224, 224) and batch["pixel_values"].dtype == torch.float32
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == data.labels[:5].tolist()
    with pytest.raises(ValueError, match="uint8"):
        FerTensorDataset(data.images.float(), data.labels)
    with pytest.raises(ValueError, match="70 images but 3 labels"):
        FerTensorDataset(data.images, data.labels[:3])


@pytest.fixture(scope="module")
def model_batch(faces) -> torch.Tensor:
    """The 16 real faces as a model-ready (16, 3, 96, 96) batch."""
    return BatchTransform(96, 3, MEAN, STD)(faces)


def test_mixup_blends_each_face_with_its_partner(model_batch):
    x, before = model_batch, model_batch.clone()
    torch.manual_seed(0)
    mix = BatchMixer(Augment(mixup_alpha=0.4))(x)
    assert 0.0 < mix.lam < 1.0
    assert sorted(mix.perm.tolist()) == list(range(16))
    torch.testing.assert_close(mix.pixels, mix.lam * x + (1 - mix.lam) * x[mix.perm])
    assert torch.equal(x, before)  # the collator's batch is left as it was


def test_cutmix_pastes_one_box_whose_area_sets_lam(model_batch):
    x, s = model_batch, model_batch.shape[-1]
    for seed in range(5):
        torch.manual_seed(seed)
        mix = BatchMixer(Augment(cutmix_alpha=1.0))(x)
        changed = (mix.pixels != x).any(1).any(0)  # (S, S): pixels taken from a partner in any face
        rows, cols = torch.nonzero(changed, as_tuple=True)
        top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        box = torch.zeros(s, s, dtype=torch.bool)
        box[top:bottom, left:right] = True
        torch.testing.assert_close(mix.pixels, torch.where(box, x[mix.perm], x), atol=0, rtol=0)
        assert mix.lam == pytest.approx(1 - box.sum().item() / s**2)  # the loss weight is the exact area kept


def test_mixing_off_and_mix_prob(model_batch):
    assert BatchMixer(Augment()).enabled is False and BatchMixer(Augment())(model_batch) is None
    assert BatchMixer(Augment(mixup_alpha=0.4, mix_prob=0.0)).enabled is False
    both = BatchMixer(Augment(mixup_alpha=0.4, cutmix_alpha=1.0, mix_prob=0.5))
    torch.manual_seed(0)
    mixes = [both(model_batch) for _ in range(200)]
    mixed = [m for m in mixes if m is not None]
    assert 70 < len(mixed) < 130  # about half the batches
    # both on: some batches are mixup (every pixel blended by lam), the others CutMix
    x = model_batch
    blended = [torch.allclose(m.pixels, m.lam * x + (1 - m.lam) * x[m.perm], atol=1e-5) for m in mixed]
    assert 0.3 < sum(blended) / len(mixed) < 0.7


# ------------------------------------------------------------------------------ the transform where the model runs
def _trainer(model, tmp_path, augment):
    from transformers import TrainingArguments

    from fer_hf.training.losses import WeightedCrossEntropy
    from fer_hf.training.trainer import FerTrainer

    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], per_device_eval_batch_size=32)
    args.remove_unused_columns = False
    transforms = dict(
        train_transform=BatchTransform(48, 1, 0.5, 0.5, augment=augment, train=True),
        eval_transform=BatchTransform(48, 1, 0.5, 0.5),
    )
    return FerTrainer(
        model=model, args=args, loss_fn=WeightedCrossEntropy(), data_collator=FerCollator(), **transforms
    )


def test_the_collator_hands_over_uint8_faces_and_the_step_draws_what_the_collator_drew(bundled_dd, tmp_path):
    """Batches cross to the device as uint8 (B, 48, 48) (64 faces: 147 KB, not 38.5 MB of floats); the training
    step then augments them with the very draws the collator used to make (same seed: bit-identical batches, so the
    same augmentation distributions), and evaluation steps give exactly the un-augmented transform."""
    from fer_hf.configs import ModelArgs
    from fer_hf.models import build_model

    data = FerTensorDataset.from_split(bundled_dd["train"].select(range(64)))
    data.teacher = torch.randn(64, 2, 7).log_softmax(-1)  # a distillation teacher: face, mirror
    items = [data[i] for i in range(64)]
    raw = FerCollator()(items)
    assert raw["pixels"].dtype == torch.uint8 and raw["pixels"].shape == (64, 48, 48)
    assert raw["pixels"].nbytes == 147_456 and raw["teacher"].shape == (64, 2, 7)

    augment = Augment(hflip=0.5, rotation=10, translate=0.08, scale=(0.9, 1.15), brightness=0.25, random_erasing=0.5)
    model = build_model(ModelArgs(family="cnn", preset="report-c-baseline"), [str(i) for i in range(7)]).model
    trainer = _trainer(model, tmp_path, augment)
    model.train()
    torch.manual_seed(3)
    stepped = trainer._prepare_inputs(FerCollator()(items))
    torch.manual_seed(3)
    collated = FerCollator(BatchTransform(48, 1, 0.5, 0.5, augment=augment, train=True))(items)
    assert set(stepped) == {"pixel_values", "labels", "teacher"}
    assert torch.equal(stepped["pixel_values"], collated["pixel_values"])
    assert torch.equal(stepped["teacher"], collated["teacher"])  # the teacher's view of the drawn mirror
    flips = trainer.train_transform.last_flip
    assert 0 < flips.sum() < 64 and torch.equal(stepped["teacher"], data.teacher[torch.arange(64), flips.long()])

    model.eval()
    evaluated = trainer._prepare_inputs(FerCollator()(items))
    assert torch.equal(evaluated["pixel_values"], BatchTransform(48, 1, 0.5, 0.5)(raw["pixels"]))
    assert not torch.equal(evaluated["pixel_values"], stepped["pixel_values"])


def test_trainer_evaluation_is_bit_identical_to_the_transform_before_the_model(bundled_dd, tmp_path):
    """Trainer.predict (uint8 batches, transform inside the step) gives the logits of the eval transform applied
    before the model, bit for bit: the published evaluation numbers do not move."""
    from fer_hf.models.loading import load_classifier

    model = load_classifier("default").model
    data = FerTensorDataset.from_split(bundled_dd["validation"])  # 70 real faces
    predicted = _trainer(model, tmp_path, Augment()).predict(data).predictions
    transform = BatchTransform(48, 1, 0.5, 0.5)
    with torch.no_grad():
        expected = torch.cat([model(pixel_values=transform(data.images[i : i + 32])).logits for i in range(0, 70, 32)])
    assert np.array_equal(predicted, expected.numpy())


def test_channels_sharing_one_mean_std_are_one_plane_expanded(faces):
    """Gray repeated as RGB with one mean/std (ViT's 0.5, EfficientNet-Lite's) is written once and expanded: the
    same values as three copies, and the bundled lite0 gives bit-identical logits on it."""
    from fer_hf.models.loading import load_classifier

    shared = BatchTransform(96, 3, 0.5, 0.5)(faces)
    assert shared.shape == (16, 3, 96, 96) and shared.stride(1) == 0  # one plane
    copies = shared.contiguous()
    assert torch.equal(shared, copies) and torch.equal(copies[:, 0], copies[:, 2])
    assert BatchTransform(96, 3, MEAN, STD)(faces).stride(1) != 0  # ImageNet statistics: three planes
    model = load_classifier("lite0").model
    with torch.no_grad():
        assert torch.equal(model(pixel_values=shared).logits, model(pixel_values=copies).logits)


def test_the_affine_grid_is_torchs(faces):
    """The grid built in grid_sample's own layout is F.affine_grid's, so augmented batches are what they were."""
    augment = Augment(rotation=20, translate=0.1, scale=(0.8, 1.2))
    transform = BatchTransform(224, 1, 0.5, 0.5, augment=augment, train=True)
    theta = transform._random_theta(16)
    expected = F.affine_grid(theta, (16, 1, 224, 224), align_corners=False)
    torch.testing.assert_close(transform._affine_grid(theta), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("train", [False, True])
def test_the_transform_keeps_every_tensor_on_the_faces_device(train):
    """It runs where the model runs (a GPU in training): no CPU tensor may meet the batch in an op. PyTorch's meta
    device, which refuses cross-device operands, checks that without a GPU; the values are checked on the CPU above."""
    augment = Augment(
        rotation=10,
        translate=0.05,
        scale=(0.9, 1.1),
        brightness=0.25,
        contrast=0.25,
        sharpness=(0.5, 1.5),
        random_erasing=1.0,
    )
    transform = BatchTransform(96, 3, MEAN, STD, augment=augment, train=train)
    out = transform(torch.zeros((4, 48, 48), dtype=torch.uint8, device="meta"))
    assert out.device.type == "meta" and out.shape == (4, 3, 96, 96) and out.dtype == torch.float32
