"""The networks: plain `nn.Module`s, chosen by Hydra (`conf/model/*.yaml`, `_target_` is the registry).

Every net maps normalised images (B, 1, 28, 28) to logits (B, 10). Their settings' defaults live in conf/model/.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """Seed 001's fully-connected baseline: flatten, hidden ReLU layers with dropout."""

    def __init__(self, hidden: Sequence[int], dropout: float, num_classes: int = 10):
        super().__init__()
        # (B, 1, 28, 28) -> (B, 784)
        layers: list[nn.Module] = [nn.Flatten()]
        d = 28 * 28
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            d = h
        layers.append(nn.Linear(d, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SimpleCNN(nn.Module):
    """Seed 003: conv 32/64/128 (3x3, ReLU), each followed by 2x2 max-pool, dense 128, 10 outputs.

    'same' padding: (B, 1, 28, 28) -> (B, 32, 14, 14) -> (B, 64, 7, 7) -> (B, 128, 3, 3) -> 1152 features.
    """

    def __init__(self, widths: Sequence[int], hidden: int, dropout: float, num_classes: int = 10):
        super().__init__()
        blocks: list[nn.Module] = []
        c, size = 1, 28
        for w in widths:
            blocks += [nn.Conv2d(c, w, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c, size = w, size // 2
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c * size * size, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    # bias=False: BatchNorm's shift makes a conv bias redundant
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
    )


class BNGapCNN(nn.Module):
    """Seed 004: conv 64/128/256 with BatchNorm + ReLU, max-pool between blocks, global average pooling,
    dense + dropout.

    (B, 1, 28, 28) -> (B, 64, 28, 28) -pool-> (B, 128, 14, 14) -pool-> (B, 256, 7, 7) -GAP-> (B, 256) -> (B, 10).
    `convs_per_block` > 1 deepens each stage (more MACs, more accuracy).
    """

    def __init__(
        self, widths: Sequence[int], hidden: int, dropout: float, convs_per_block: int, num_classes: int = 10
    ):
        super().__init__()
        layers: list[nn.Module] = []
        c = 1
        for i, w in enumerate(widths):
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            for _ in range(convs_per_block):
                layers.append(conv_bn(c, w))
                c = w
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        if hidden:
            head += [nn.Linear(c, hidden), nn.ReLU(inplace=True)]
            c = hidden
        head += [nn.Dropout(dropout), nn.Linear(c, num_classes)]
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class FastCNN(nn.Module):
    """Small BN CNN for `experiment=fast`: three 3x3-conv stages with 2x2
    max-pools, then a linear layer on the flattened 3x3 maps (keeps where things are, which GAP would lose here).

    (B, 1, 28, 28) -> (B, w0, 14, 14) -> (B, w1, 7, 7) -> (B, w2, 3, 3) -> (B, 9 * w2) -> (B, 10).
    `pool_first`: conv -> pool -> BN -> ReLU (as in airbench) instead of conv -> BN -> ReLU -> pool, so BN and ReLU
    run on 4x fewer activations. `extra[i]` more conv-BN-ReLU layers at stage i's pooled size: depth where it is
    cheap (a 64->64 conv on 3x3 maps is 0.33 MMAC). widths (16, 32, 64), extra (0, 0, 1): ~2.3 MMAC per image.
    """

    def __init__(
        self,
        widths: Sequence[int],
        dropout: float,
        pool_first: bool,
        extra: Sequence[int] | None = None,
        num_classes: int = 10,
    ):
        super().__init__()
        extra = [0] * len(widths) if extra is None else list(extra)
        if len(extra) != len(widths) or any(not isinstance(n, int) or n < 0 for n in extra):
            raise ValueError(
                f"extra={extra} needs one count >= 0 per stage of widths={list(widths)}, "
                f"e.g. model.net.extra={[0] * (len(widths) - 1) + [1]}"
            )
        layers: list[nn.Module] = []
        c = 1
        for w, n_extra in zip(widths, extra):
            if pool_first:
                layers.append(
                    nn.Sequential(
                        nn.Conv2d(c, w, 3, padding=1, bias=False),
                        nn.MaxPool2d(2),
                        nn.BatchNorm2d(w),
                        nn.ReLU(inplace=True),
                    )
                )
            else:
                # the textbook order, conv -> BN -> ReLU -> pool: pool_first's ablation
                layers += [conv_bn(c, w), nn.MaxPool2d(2)]
            layers += [conv_bn(w, w) for _ in range(n_extra)]
            c = w
        self.features = nn.Sequential(*layers)
        size = 28 // 2 ** len(widths)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(c * size * size, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class PreActBlock(nn.Module):
    """Pre-activation residual block (He et al. 2016, 'Identity Mappings'): BN-ReLU-conv3x3, BN-ReLU-conv3x3, plus
    the input. Where the shape changes (stride 2 or new width) the shortcut is a 1x1 conv on the activated input."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(c_in), nn.BatchNorm2d(c_out)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.shortcut = (
            nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False) if stride != 1 or c_in != c_out else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(a)
        return self.conv2(torch.relu(self.bn2(self.conv1(a)))) + skip


class ResNet(nn.Module):
    """Pre-activation ResNet for 28x28 grayscale (CIFAR-style: 3x3 stem, no 7x7 conv or max-pool).

    (B, 1, 28, 28) -stem-> (B, w0, 28, 28) -stage 1-> (B, w0, 28, 28) -stage 2-> (B, w1, 14, 14)
    -stage 3-> (B, w2, 7, 7) -BN, ReLU, GAP-> (B, w2) -> (B, 10).
    `blocks` residual blocks per stage (two 3x3 convs each): widths (16, 32, 64) with 3 blocks is ResNet-20;
    wider stages make a narrow Wide-ResNet. Cost per image grows with blocks x width^2.
    """

    def __init__(
        self,
        widths: Sequence[int] = (16, 32, 64),
        blocks: int = 3,
        dropout: float = 0.0,
        num_classes: int = 10,
    ):
        super().__init__()
        if blocks < 1 or len(widths) < 1:
            raise ValueError(
                f"ResNet needs blocks >= 1 and at least one stage, got blocks={blocks}, widths={widths}"
            )
        self.stem = nn.Conv2d(1, widths[0], 3, padding=1, bias=False)
        layers: list[nn.Module] = []
        c = widths[0]
        for i, w in enumerate(widths):
            for j in range(blocks):
                layers.append(PreActBlock(c, w, stride=2 if i > 0 and j == 0 else 1))
                c = w
        self.stages = nn.Sequential(*layers)
        # pre-activation blocks end in a conv: the last BN-ReLU comes before pooling
        self.head = nn.Sequential(
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(c, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


class Whiten(nn.Module):
    """A frozen first conv whose filters whiten k x k image patches (airbench's stem): the eigenvectors of the
    training patches' covariance, scaled by 1/sqrt(eigenvalue), and their negatives (so a following GELU keeps both
    signs). (B, 1, 28, 28) -> (B, 2 k^2, 28 - k + 1, 28 - k + 1); only the bias is trained.

    The filters are a buffer: `fit(x)` computes them from the training split when a run starts
    (`LitClassifier.setup`), and they are saved in every checkpoint, so eval/predict/export use the same ones.
    Until then they are the identity on each patch pixel, scaled to unit variance (a valid but unwhitened stem).
    """

    def __init__(self, kernel: int, eps: float = 5e-4):
        super().__init__()
        self.kernel, self.eps = kernel, eps
        n = kernel * kernel
        eye = torch.eye(n).reshape(n, 1, kernel, kernel)
        self.register_buffer("weight", torch.cat([eye, -eye]))
        self.bias = nn.Parameter(torch.zeros(2 * n))

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> None:
        """x: (N, 1, 28, 28) normalised training images (a few thousand suffice; deterministic for the same x)."""
        k = self.kernel
        # (N * P, k^2): every k x k patch, as rows
        patches = x.float().unfold(2, k, 1).unfold(3, k, 1).reshape(-1, k * k).double()
        patches = patches - patches.mean(0)
        cov = patches.T @ patches / len(patches)
        eigvals, eigvecs = torch.linalg.eigh(cov)
        # (k^2, 1, k, k): one filter per eigenvector, each output of unit variance on the training patches
        filters = (eigvecs.T / (eigvals + self.eps).sqrt()[:, None]).reshape(-1, 1, k, k).float()
        self.weight.copy_(torch.cat([filters, -filters]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype))


class SpeedNet(nn.Module):
    """A net for time to accuracy, after airbench (Keller Jordan's CIFAR-10 speed runs): a whitening stem, then per
    stage conv3x3 -> 2x2 max-pool -> BN -> GELU, then `depth` - 1 x (conv3x3 -> BN -> GELU) (airbench94: depth 2,
    airbench96: 3), global max-pool, a scaled linear head.

    kernel 2: (B, 1, 28, 28) -whiten-> (B, 8, 27, 27) -stage 1-> (B, w0, 13, 13) -stage 2-> (B, w1, 6, 6)
    -stage 3-> (B, w2, 3, 3) -max-> (B, w2) -> (B, 10). Pooling before BN makes BN and GELU touch 4x fewer
    activations. `dirac`: each 3x3 conv starts as the identity on its first input channels (plus its random init),
    so the deep net starts close to a shallow one. `head_scale` (airbench: 1/9) keeps the initial logits small.
    `depth` defaults to 2 so that a checkpoint whose saved config predates it rebuilds the same layers.
    """

    def __init__(
        self,
        widths: Sequence[int],
        whiten_kernel: int,
        whiten: bool,
        dirac: bool,
        head_scale: float,
        depth: int = 2,
        num_classes: int = 10,
    ):
        super().__init__()
        self.whiten = Whiten(whiten_kernel)
        # false: the stem keeps its data-independent start (an ablation of the whitening)
        self.fit_whiten = whiten
        self.head_scale = head_scale
        layers: list[nn.Module] = [self.whiten, nn.GELU()]
        c = 2 * whiten_kernel**2
        # bool is an int in Python: `depth=true` would silently build a 1-conv net
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            raise ValueError(
                f"depth={depth!r}: convs per stage, a whole number >= 1 (each stage needs its first conv), "
                "e.g. model.net.depth=2"
            )
        for w in widths:
            convs = [nn.Conv2d(c, w, 3, padding=1, bias=False)]
            convs += [nn.Conv2d(w, w, 3, padding=1, bias=False) for _ in range(depth - 1)]
            # the first conv runs at the stage's input resolution, the others after its pooling (4x fewer FLOPs)
            layers += [convs[0], nn.MaxPool2d(2), nn.BatchNorm2d(w), nn.GELU()]
            for conv in convs[1:]:
                layers += [conv, nn.BatchNorm2d(w), nn.GELU()]
            if dirac:
                for conv in convs:
                    nn.init.dirac_(conv.weight.data[: conv.in_channels])
            c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(c, num_classes, bias=False)
        )

    def init_from_data(self, x: torch.Tensor) -> None:
        """x: (N, 1, 28, 28) normalised training images: the whitening stem's filters (see Whiten)."""
        if self.fit_whiten:
            self.whiten.fit(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)) * self.head_scale


def plain_net(net: nn.Module) -> nn.Module:
    """The net itself, also when `model.compile=true` wrapped it (torch.compile keeps it as `_orig_mod`)."""
    return getattr(net, "_orig_mod", net)


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in plain_net(net).parameters())
