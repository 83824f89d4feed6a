"""The training data path: SSD targets equal GluonCV's generator, augmented boxes stay on their
objects, and the epoch batches are fixed-size, complete, sharded evenly and reproducible."""
import mxnet as mx
import numpy as np
import pytest

from hackathon.train.augment import SceneShiftAugment, normalize
from hackathon.train.data import EpochBatches, repeat_factors, ssd_targets
from hackathon.train.models import build_ssd


@pytest.fixture(scope="module")
def anchors():
    net = build_ssd(["a", "b", "c"], data_shape=300, pretrained_base=False)
    with mx.autograd.train_mode():
        _, _, anchors = net(mx.nd.zeros((1, 3, 300, 300)))
    return anchors


def test_numpy_targets_equal_gluoncvs_target_generator(anchors):
    from gluoncv.model_zoo.ssd.target import SSDTargetGenerator

    reference = SSDTargetGenerator(iou_thresh=0.5, stds=(0.1, 0.1, 0.2, 0.2), negative_mining_ratio=-1)
    rng = np.random.RandomState(0)
    for case in range(30):
        m = rng.randint(1, 12)
        xy = rng.uniform(0, 280, (m, 2))
        wh = rng.uniform(4, 200, (m, 2)) if case % 3 else rng.uniform(2, 20, (m, 2))  # tiny objects too
        boxes = np.clip(np.hstack([xy, xy + wh]), 0, 300).astype(np.float32)
        ids = rng.randint(0, 3, m)
        want_cls, want_box, _ = reference(anchors, None, mx.nd.array(boxes[None]),
                                          mx.nd.array(ids.reshape(1, -1, 1).astype(np.float32)))
        got_cls, got_box = ssd_targets(anchors.asnumpy(), boxes, ids)
        np.testing.assert_array_equal(got_cls, want_cls[0].asnumpy(), err_msg=f"case {case}")
        np.testing.assert_allclose(got_box, want_box[0].asnumpy(), rtol=1e-4, atol=1e-4, err_msg=f"case {case}")
        assert (got_cls > 0).sum() >= m  # every object owns at least one anchor


def test_no_object_left_in_a_crop_is_all_background(anchors):
    cls_t, box_t = ssd_targets(anchors.asnumpy(), np.zeros((0, 4)), np.zeros((0,)))
    assert cls_t.shape == (anchors.shape[1],) and not cls_t.any() and not box_t.any()


def test_augmented_boxes_stay_on_their_objects():
    """A bright block on a dark photo: after zoom-out, crop, resize, flip and colour changes, the
    bright pixels of the output lie inside the returned box and nowhere else."""
    img = np.full((240, 320, 3), 20, np.uint8)
    img[60:140, 100:220] = 230
    aug = SceneShiftAugment(300, color=False, blur=0)
    kept = 0
    for seed in range(40):
        x, boxes, ids = aug(img, np.array([[100, 60, 220, 140]]), np.array([1]), np.random.default_rng(seed))
        assert x.shape == (3, 300, 300) and x.dtype == np.float32
        bright = x.mean(axis=0) > 1.0  # well above the dark background and the mean-grey padding
        if not len(boxes):
            continue
        kept += 1
        assert ids.tolist() == [1]
        x1, y1, x2, y2 = boxes[0]
        inside = np.zeros_like(bright)
        inside[int(np.ceil(y1)) + 1:int(y2) - 1, int(np.ceil(x1)) + 1:int(x2) - 1] = True
        assert bright[inside].mean() > 0.95, seed
        ring = np.ones_like(bright)
        ring[max(0, int(y1) - 2):int(np.ceil(y2)) + 2, max(0, int(x1) - 2):int(np.ceil(x2)) + 2] = False
        assert bright[ring].mean() < 0.01, seed
    assert kept >= 30


def test_normalize_is_imagenet_mean_std_in_chw():
    img = np.random.RandomState(0).randint(0, 256, (5, 7, 3)).astype(np.uint8)
    want = mx.nd.image.normalize(mx.nd.image.to_tensor(mx.nd.array(img, dtype=np.uint8)),
                                 mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)).asnumpy()
    np.testing.assert_allclose(normalize(img), want, rtol=1e-5, atol=1e-5)


def test_epoch_batches_fixed_size_complete_even_shards_and_reproducible():
    b = EpochBatches(11, 4, seed=3)
    batches = list(b)
    assert all(len(x) == 4 for x in batches) and len(batches) == 3
    assert {i for x in batches for _, i in x} == set(range(11))  # the last batch wraps around
    assert list(EpochBatches(11, 4, seed=3)) == batches
    b.set_epoch(1)
    assert list(b) != batches and all(e == 1 for x in b for e, _ in x)
    shards = [list(EpochBatches(11, 2, seed=0, num_parts=2, part_index=r)) for r in range(2)]
    assert len(shards[0]) == len(shards[1])  # dist_sync: every machine takes as many steps
    seen = {i for s in shards for x in s for _, i in x}
    assert seen == set(range(11))
    tiny = list(EpochBatches(1, 4))  # fewer photos than a batch: the batch is filled, not short
    assert len(tiny) == 1 and len(tiny[0]) == 4


class _Labels:
    """Records as repeat_factors reads them: the class ids of each photo."""

    def __init__(self, ids):
        self.ids = ids

    def __len__(self):
        return len(self.ids)

    def label(self, i):
        return np.zeros((len(self.ids[i]), 4), np.float32), np.asarray(self.ids[i], np.int64)


def test_repeat_factors_lift_the_photos_of_rare_classes_only():
    # class 0 on all 10 photos, class 1 on one photo, photo 9 empty
    recs = _Labels([[0, 1, 0]] + [[0]] * 8 + [[]])
    r = repeat_factors(recs, 0.4)
    assert r[0] == pytest.approx(np.sqrt(0.4 / 0.1)) and np.all(r[1:] == 1)
    assert np.all(repeat_factors(recs, 0) == 1)


def test_epoch_batches_with_repeats_fixed_length_each_copy_its_own_key():
    r = np.array([1.0, 2.5, 1.0, 1.5, 3.0])
    b = EpochBatches(5, 3, seed=1, repeats=r)
    for epoch in range(4):
        b.set_epoch(epoch)
        keys = [k for x in b for k in x]
        assert all(len(x) == 3 for x in b) and len(b) == 3  # round(9) samples in batches of 3
        assert len(set(keys)) == 9 and all(k[0] == epoch for k in keys)  # no key twice: each copy augmented apart
        n = np.bincount([k[1] for k in keys], minlength=5)
        assert np.all(n >= np.floor(r)) and np.all(n <= np.ceil(r))
        assert {k[2] for k in keys if len(k) == 3} <= {1, 2}  # extra copies are (epoch, i, k), k >= 1
    b.set_epoch(0)
    assert list(EpochBatches(5, 3, seed=1, repeats=r)) == list(b)  # reproducible: --resume sees the same epoch
    shards = [EpochBatches(5, 2, seed=1, num_parts=2, part_index=p, repeats=r) for p in range(2)]
    assert len(shards[0]) == len(shards[1])
    assert list(EpochBatches(5, 3, seed=1, repeats=np.ones(5))) == list(EpochBatches(5, 3, seed=1))
