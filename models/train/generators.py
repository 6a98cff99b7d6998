"""Family 1: whole-image generators trained here on the real training split.

Two generator families with different up-sampling, so their traces differ:
* ``gan``: DCGAN (Radford et al., ICLR 2016) with transposed convolutions -- known to leave
  checkerboard artefacts (Odena et al., Distill 2016).
* ``vae``: a convolutional VAE (Kingma & Welling, ICLR 2014) whose decoder up-samples by
  bilinear interpolation + 3x3 convolution (smooth, over-regular texture).
Both are tiny and train for a fixed wall-clock budget on CPU; samples are delivered at the
native size and also up-scaled as a product would (handled in ``fakes.py``).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

__all__ = ["train_generator", "sample_generator"]


class _DCGen(nn.Module):
    def __init__(self, z: int = 64, ch: int = 32) -> None:
        super().__init__()
        self.z = z
        layers: list[nn.Module] = [nn.ConvTranspose2d(z, ch * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ch * 8), nn.ReLU(True)]
        c = ch * 8
        for _ in range(3):  # 4 -> 8 -> 16 -> 32
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c // 2), nn.ReLU(True)]
            c //= 2
        layers += [nn.ConvTranspose2d(c, 1, 4, 2, 1), nn.Sigmoid()]  # -> 64
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])


class _DCDisc(nn.Module):
    def __init__(self, ch: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, ch, 4, 2, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ch, ch * 2, 4, 2, 1), nn.BatchNorm2d(ch * 2), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ch * 2, ch * 4, 4, 2, 1), nn.BatchNorm2d(ch * 4), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ch * 4, ch * 8, 4, 2, 1), nn.BatchNorm2d(ch * 8), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ch * 8, 1, 4, 1, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()


class _VAE(nn.Module):
    def __init__(self, z: int = 32, ch: int = 32) -> None:
        super().__init__()
        self.z = z
        self.enc = nn.Sequential(
            nn.Conv2d(1, ch, 4, 2, 1), nn.ReLU(True), nn.Conv2d(ch, ch * 2, 4, 2, 1), nn.ReLU(True),
            nn.Conv2d(ch * 2, ch * 4, 4, 2, 1), nn.ReLU(True), nn.Conv2d(ch * 4, ch * 4, 4, 2, 1), nn.ReLU(True),
            nn.Flatten(), nn.Linear(ch * 4 * 16, 2 * z))
        self.fc = nn.Linear(z, ch * 4 * 16)
        dec: list[nn.Module] = []
        c = ch * 4
        for _ in range(4):  # 4 -> 64, interpolation up-sampling
            dec += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                    nn.Conv2d(c, max(c // 2, 16), 3, 1, 1), nn.ReLU(True)]
            c = max(c // 2, 16)
        dec += [nn.Conv2d(c, 1, 3, 1, 1), nn.Sigmoid()]
        self.dec = nn.Sequential(*dec)
        self.ch = ch

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.dec(self.fc(z).view(-1, self.ch * 4, 4, 4))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.enc(x).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decode(z), mu, logvar


def train_generator(kind: str, images: np.ndarray, budget: dict[str, Any], batch: int, seed: int,
                    ckpt: Path, log: Callable[[str], None]) -> None:
    """Train ``kind`` ('gan' | 'vae') on ``images`` [N,64,64] in [0,1]; resumable.

    ``budget`` is ``{"steps": n}`` (reproducible: the same seed and steps give the same generator) or,
    in configs up to 1.2.0, ``{"seconds": s}``: a wall-clock budget reaches a different step on a
    busier or faster machine, so its fakes cannot be made again (a GAN stopped at 1044 instead of
    the shipped run's step count scored AUC 0.67 instead of 1.00 against xray-npr 1.2.0)."""
    steps, seconds = budget.get("steps"), float(budget.get("seconds", float("inf")))
    if steps is None and seconds == float("inf"):
        raise ValueError("generator budget needs steps (or, legacy, seconds)")
    steps = int(steps) if steps is not None else None
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    data = torch.from_numpy(images[:, None].astype(np.float32))
    state = torch.load(ckpt, weights_only=False) if ckpt.exists() else None
    if kind == "gan":
        g, d = _DCGen(), _DCDisc()
        og = torch.optim.Adam(g.parameters(), 2e-4, betas=(0.5, 0.999))
        od = torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999))
        mods: dict[str, Any] = {"g": g, "d": d, "og": og, "od": od}
    else:
        v = _VAE()
        ov = torch.optim.Adam(v.parameters(), 1e-3)
        mods = {"g": v, "ov": ov}
    used, step = 0.0, 0
    if state is not None:
        for k, m in mods.items():
            m.load_state_dict(state[k])
        used, step = state["seconds"], state["step"]
        if state.get("done") or used >= seconds or (steps is not None and step >= steps):
            return
        if "rng" in state:  # go on with the batches and noise an uninterrupted run would draw
            rng.bit_generator.state = state["rng"]
            torch.set_rng_state(state["torch_rng"])
        else:
            log(f"{kind}: an older checkpoint without the random state: steps from {step} on differ from an "
                "uninterrupted run's")
    bce = nn.BCEWithLogitsLoss()
    t0 = time.time()
    last_save = t0
    while (step < steps) if steps is not None else (used + (time.time() - t0) < seconds):
        idx = torch.from_numpy(rng.integers(0, len(data), batch))
        x = data[idx]
        if torch.rand(()) < 0.5:
            x = x.flip(3)
        if kind == "gan":
            z = torch.randn(batch, g.z)
            fake = g(z)
            ld = bce(d(x), torch.full((batch,), 0.9)) + bce(d(fake.detach()), torch.zeros(batch))
            od.zero_grad(); ld.backward(); od.step()
            lg = bce(d(fake), torch.ones(batch))
            og.zero_grad(); lg.backward(); og.step()
            msg = f"ld={ld.item():.3f} lg={lg.item():.3f}"
        else:
            rec, mu, logvar = v(x)
            l_rec = ((rec - x) ** 2).sum(dim=(1, 2, 3)).mean()
            kl = (-0.5 * (1 + logvar - mu ** 2 - logvar.exp()).sum(1)).mean()
            loss = l_rec + 0.5 * kl
            ov.zero_grad(); loss.backward(); ov.step()
            msg = f"rec={l_rec.item():.2f} kl={kl.item():.2f}"
        step += 1
        if step % 100 == 0:
            log(f"{kind} step {step} {msg}")
        if time.time() - last_save > 30:
            torch.save({**{k: m.state_dict() for k, m in mods.items()}, "seconds": used + time.time() - t0, "step": step,
                        "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state()}, ckpt)
            last_save = time.time()
    torch.save({**{k: m.state_dict() for k, m in mods.items()}, "seconds": used + time.time() - t0, "step": step,
                "done": True}, ckpt)
    log(f"{kind} done: {step} steps")


@torch.no_grad()
def sample_generator(kind: str, ckpt: Path, n: int, seed: int) -> np.ndarray:
    """Draw ``n`` samples [n,64,64] in [0,1] from a trained generator."""
    torch.manual_seed(seed)
    state = torch.load(ckpt, weights_only=False)
    if kind == "gan":
        gen = _DCGen()
        gen.load_state_dict(state["g"])
        out = gen.eval()(torch.randn(n, gen.z))
    else:
        vae = _VAE()
        vae.load_state_dict(state["g"])
        out = vae.eval().decode(torch.randn(n, vae.z))
    return out[:, 0].numpy().astype(np.float32)
