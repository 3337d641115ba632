"""ddae.report.labels: runs and networks named by what they are (issue 22 item 5)."""

from ddae.report.labels import network_label, on_paper_dataset, paper_dataset


def test_a_wide_resnet_is_named_by_its_depth_and_width():
    assert network_label({"arch": "wide_resnet", "depth": 10, "widen_factor": 1}) == "WRN-10-1"
    assert network_label({"arch": "wide_resnet"}) == "WRN-28-10"  # WideResNet.Config defaults
    noisy = {"arch": "noisy_wide_resnet", "depth": 16, "widen_factor": 4}
    assert network_label(noisy) == "noise-conditional WRN-16-4"
    assert network_label({"arch": "ddpmpp"}) == "ddpmpp"


def test_paper_values_stand_only_beside_the_papers_own_dataset():
    assert paper_dataset("cifar10_edm") == "cifar10"
    assert paper_dataset("tiny_imagenet_wrn") == "tiny_imagenet"
    assert on_paper_dataset("cifar10", "cifar10_edm", stand_in=False)
    assert not on_paper_dataset("digits", "cifar10_edm", stand_in=False)
    assert not on_paper_dataset("cifar10", "cifar10_edm", stand_in=True)  # the miniature's
    assert not on_paper_dataset("cifar10", "tiny_imagenet_edm", stand_in=False)
    assert not on_paper_dataset("cifar10", None, stand_in=False)
