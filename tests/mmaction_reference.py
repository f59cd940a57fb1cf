"""The independent side of the CSN parity tests: mmaction2 1.2.0's own classes (ResNet3dCSN,
I3DHead, its test-pipeline transforms), imported without its compiled ops.

Its 1.2.0 wheel lacks `mmaction/models/localizers/drn/`, so stub modules stand in for it before
`mmaction.models` is imported (../shared/design.md, "Measured 2026-12-06")."""
import sys
import types

import numpy as np
import pytest

ARCHS = {"ir_csn_152": ("ir", 152), "ip_csn_152": ("ip", 152), "ir_csn_50": ("ir", 50)}


def _stub_drn():
    for name in ("mmaction.models.localizers.drn", "mmaction.models.localizers.drn.drn"):
        module = sys.modules.setdefault(name, types.ModuleType(name))
        module.DRN = type("DRN", (), {})


def mmaction():
    """The mmaction package (skips the test where it is not installed)."""
    pytest.importorskip("mmengine")
    pytest.importorskip("mmcv")
    _stub_drn()
    return pytest.importorskip("mmaction")


def randomise_batchnorm(model, generator):
    import torch
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm3d):
                shape = module.running_mean.shape
                module.running_mean.copy_(torch.randn(shape, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(shape, generator=generator) * 0.5 + 0.5)
                module.weight.copy_(torch.rand(shape, generator=generator) * 0.5 + 0.75)
                module.bias.copy_(torch.randn(shape, generator=generator) * 0.1)


def csn_recognizer(arch, num_classes=400, seed=0, bn_frozen=False):
    """mmaction2's backbone and head for `arch` as one torch module whose state_dict has the
    layout of its checkpoints (`backbone.*`, `cls_head.fc_cls.*`), with random weights and
    randomised BN statistics; `forward(x)` takes NCTHW and returns the logits."""
    import torch
    mmaction()
    from mmaction.models.backbones.resnet3d_csn import ResNet3dCSN
    from mmaction.models.heads import I3DHead
    mode, depth = ARCHS[arch]
    torch.manual_seed(seed)

    class Recognizer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = ResNet3dCSN(depth=depth, pretrained=None, pretrained2d=False, with_pool2=False,
                                        bottleneck_mode=mode, norm_eval=bn_frozen, bn_frozen=bn_frozen,
                                        zero_init_residual=False)
            self.cls_head = I3DHead(num_classes=num_classes, in_channels=2048, spatial_type="avg", dropout_ratio=0.0)

        def forward(self, x):
            return self.cls_head(self.backbone(x))

    model = Recognizer()
    generator = torch.Generator().manual_seed(seed)
    randomise_batchnorm(model, generator)
    with torch.no_grad():
        model.cls_head.fc_cls.weight.normal_(0, 0.05, generator=generator)
        model.cls_head.fc_cls.bias.uniform_(-0.5, 0.5, generator=generator)
    return model.eval()


def save_mmaction_checkpoint(model, path):
    """A checkpoint as mmengine writes one: {"meta": ..., "state_dict": ...}."""
    import torch
    torch.save({"meta": {"mmengine_version": "0.10.7", "epoch": 58}, "state_dict": model.state_dict()}, path)


def mmaction_logits(model, clips_nthwc, layers=False):
    """Logits of NTHWC float clips (and with `layers`, each stage's NTHWC output)."""
    import torch
    x = torch.from_numpy(np.ascontiguousarray(np.asarray(clips_nthwc, np.float32).transpose(0, 4, 1, 2, 3)))
    with torch.no_grad():
        if not layers:
            return model(x).numpy()
        backbone, outs = model.backbone, {}
        y = backbone.maxpool(backbone.conv1(x))
        outs["stem"] = y
        for name in backbone.res_layers:
            y = getattr(backbone, name)(y)
            outs[name] = y
        logits = model.cls_head(y)
    return logits.numpy(), {k: v.numpy().transpose(0, 2, 3, 4, 1) for k, v in outs.items()}
