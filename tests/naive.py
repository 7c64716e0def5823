"""Naive reference implementations of the paper's formulas: explicit loops, no cleverness."""

import torch


def pad4d(x, p):
    """Zero-pad the four spatial dims of (B, C, Ha, Wa, Hb, Wb) by p = (pa, pa', pb, pb')."""
    B, C, Ha, Wa, Hb, Wb = x.shape
    out = x.new_zeros(B, C, Ha + 2 * p[0], Wa + 2 * p[1], Hb + 2 * p[2], Wb + 2 * p[3])
    out[:, :, p[0] : p[0] + Ha, p[1] : p[1] + Wa, p[2] : p[2] + Hb, p[3] : p[3] + Wb] = x
    return out


def full_conv4d(x, weight, bias, stride, padding):
    """Eq. (3): y(x, x') = b + sum_{(p, p')} c(p, p') k(p - x, p' - x'), strided on the support dims.

    weight: (O, C, ka, kb, kc, kd); stride: (sb, sb') on the support dims.
    """
    B, C, Ha, Wa, Hb, Wb = x.shape
    O, _, ka, kb, kc, kd = weight.shape
    xp = pad4d(x, padding)
    Ho = (Hb + 2 * padding[2] - kc) // stride[0] + 1
    Wo = (Wb + 2 * padding[3] - kd) // stride[1] + 1
    Hq = Ha + 2 * padding[0] - ka + 1
    Wq = Wa + 2 * padding[1] - kb + 1
    y = x.new_zeros(B, O, Hq, Wq, Ho, Wo)
    for i in range(Hq):
        for j in range(Wq):
            for u in range(Ho):
                for v in range(Wo):
                    patch = xp[
                        :,
                        :,
                        i : i + ka,
                        j : j + kb,
                        u * stride[0] : u * stride[0] + kc,
                        v * stride[1] : v * stride[1] + kd,
                    ]  # (B, C, ka, kb, kc, kd)
                    y[:, :, i, j, u, v] = torch.einsum("bcpqrs,ocpqrs->bo", patch, weight) + bias
    return y


def center_pivot_conv4d(x, w1, b1, w2, b2, stride, padding):
    """Eq. (5): sum of a 2D conv over the query dims at the kept support position and a 2D conv
    over the support dims, each with its own bias. w1: (O, C, ka, kb), w2: (O, C, kc, kd)."""
    B, C, Ha, Wa, Hb, Wb = x.shape
    O, _, ka, kb = w1.shape
    kc, kd = w2.shape[-2:]
    xp = pad4d(x, padding)
    pa, pb, pc, pd = padding
    Ho = (Hb + 2 * pc - kc) // stride[0] + 1
    Wo = (Wb + 2 * pd - kd) // stride[1] + 1
    y = x.new_zeros(B, O, Ha, Wa, Ho, Wo)
    for i in range(Ha):
        for j in range(Wa):
            for u in range(Ho):
                for v in range(Wo):
                    hb, wb = u * stride[0], v * stride[1]  # the kept support position x'
                    acc = b1 + b2
                    for di in range(ka):
                        for dj in range(kb):  # p ranges over the query neighbourhood, p' = x'
                            acc = acc + xp[:, :, i + di, j + dj, hb + pc, wb + pd] @ w1[:, :, di, dj].T
                    for du in range(kc):
                        for dv in range(kd):  # p' ranges over the support neighbourhood, p = x
                            acc = acc + xp[:, :, i + pa, j + pb, hb + du, wb + dv] @ w2[:, :, du, dv].T
                    y[:, :, i, j, u, v] = acc
    return y


def cosine_correlation(fq, fs, eps=1e-5):
    """Eq. (2) pixel by pixel: (B, C, Ha, Wa), (B, C, Hb, Wb) -> (B, Ha, Wa, Hb, Wb)."""
    B, C, Ha, Wa = fq.shape
    Hb, Wb = fs.shape[-2:]
    out = torch.zeros(B, Ha, Wa, Hb, Wb, dtype=fq.dtype)
    for b in range(B):
        for i in range(Ha):
            for j in range(Wa):
                for u in range(Hb):
                    for v in range(Wb):
                        q, s = fq[b, :, i, j], fs[b, :, u, v]
                        cos = (q @ s) / ((q.norm() + eps) * (s.norm() + eps))
                        out[b, i, j, u, v] = max(cos.item(), 0.0)
    return out
