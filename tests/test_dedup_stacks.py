"""Which file names number a stack of slices (a curator's warning, `recommender.dedup.stacks`)."""

from __future__ import annotations

from recommender.dedup.stacks import numbered_like_slices


def test_names_that_differ_in_exactly_one_number_are_a_stack():
    assert numbered_like_slices(["/d/scan_z150.png", "/d/scan_z151.png", "/d/scan_z152.png"])
    assert numbered_like_slices(["/d/case7_slice_001_t1.png", "/d/case7_slice_002_t1.png"])
    assert numbered_like_slices(["/d/s_10.png", "/d/s_13.png", "/d/s_16.png"])  # every third slice exported


def test_other_folders_other_stems_or_one_number_are_not():
    assert not numbered_like_slices(["/a/scan_z150.png", "/b/scan_z151.png"])
    assert not numbered_like_slices(["/d/left_01.png", "/d/right_02.png"])
    assert not numbered_like_slices(["/d/scan_z150.png", "/d/scan_z150.jpg"])
    assert not numbered_like_slices(["/d/volume.nii.gz", "/d/volume.nii.gz"])  # slices of one file
    assert not numbered_like_slices(["/d/mona_lisa.jpg", "/d/mona_lisa_small.jpg"])


def test_two_numbers_changing_is_not_one_stack():
    assert not numbered_like_slices(["/d/case7_slice_001.png", "/d/case8_slice_002.png"])
    assert not numbered_like_slices(["/d/only_one_12.png"])


def test_running_numbers_far_apart_are_a_dataset_not_a_stack():
    """brain-mri's files are numbered per class folder; its look-alike slices are hundreds apart."""
    assert not numbered_like_slices(["/d/Tr-no_0303.jpg", "/d/Tr-no_0443.jpg", "/d/Tr-no_0499.jpg"])
    assert not numbered_like_slices(["/d/Te-no_0125.jpg", "/d/Te-no_0126.jpg", "/d/Te-no_0389.jpg"])
