"""torch.hub entry points: ``torch.hub.load(repo_dir, 'resnet56', source='local', pretrained=True)``.

With pretrained=True the weights of a committed run (results/<study>/<name>-seed*: the longest schedule, then
official data, then the lowest seed; see resnet.pretrained) are loaded; otherwise a freshly initialised network is
returned.
"""
dependencies = ["torch"]

from resnet.config import network_name  # noqa: E402
from resnet.models import CifarNet  # noqa: E402
from resnet.results import pretrained as _pretrained  # noqa: E402


def _entry(net: str, depth: int):
    def entry(pretrained: bool = False, shortcut: str = "A", **kwargs):
        if pretrained:
            return _pretrained(network_name(net, depth, shortcut), **kwargs)
        return CifarNet(depth, shortcut if net == "resnet" else None)

    entry.__doc__ = f"{'ResNet' if net == 'resnet' else 'Plain'}-{depth} for CIFAR-10 (He et al. 2016)."
    return entry


for _depth in (20, 32, 44, 56, 110, 1202):
    globals()[f"resnet{_depth}"] = _entry("resnet", _depth)
    globals()[f"plain{_depth}"] = _entry("plain", _depth)
