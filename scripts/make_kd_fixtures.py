"""make_kd_fixtures: PyTorch float64 references for floe's distillation loss (src/train/kd-loss.ts).

Run by hand (Debian python3-torch): /usr/bin/python3 scripts/make_kd_fixtures.py
Writes test/fixtures/distill/kd.json: random teacher / student logits (R, V) (f32 values), the teacher's top-k at
temperature T (ids, log-probabilities, log rest mass) and, per loss, T^2 * sum over rows of D(teacher || student) on
the k + 1 buckets and its gradient w.r.t. the student logits, by autograd. R rows, V vocab, k cached tokens.
"""
import json
import os

import torch

OUT = os.path.join(os.path.dirname(__file__), "..", "test", "fixtures", "distill", "kd.json")
R, V, K, T = 5, 40, 6, 2.0


def buckets(logits, ids):
    """log-probabilities of the k teacher tokens and of the rest bucket under softmax(logits / T): (R, k + 1)."""
    lsm = torch.log_softmax(logits / T, dim=-1)
    top = torch.gather(lsm, 1, ids)
    rest_mask = torch.ones_like(lsm, dtype=torch.bool).scatter(1, ids, False)
    rest = torch.logsumexp(lsm.masked_fill(~rest_mask, float("-inf")), dim=-1, keepdim=True)
    return torch.cat([top, rest], dim=1)


def kl(lp_a, lp_b):
    return (lp_a.exp() * (lp_a - lp_b)).sum()


def loss(kind, beta, lp, lq):
    if kind == "forward-kl":
        return kl(lp, lq)
    if kind == "reverse-kl":
        return kl(lq, lp)
    lm = torch.logsumexp(torch.stack([lp + torch.log(torch.tensor(beta, dtype=torch.float64)),
                                      lq + torch.log(torch.tensor(1 - beta, dtype=torch.float64))]), dim=0)
    return (beta * kl(lp, lm) + (1 - beta) * kl(lq, lm)) / (beta * (1 - beta))


def main():
    g = torch.Generator().manual_seed(14)
    teacher = (torch.randn(R, V, generator=g) * 3).float().double()
    student = (torch.randn(R, V, generator=g) * 3).float().double()
    ids = torch.topk(teacher, K, dim=-1).indices
    lp = buckets(teacher, ids)
    cases = []
    for kind, beta in [("forward-kl", 0.0), ("reverse-kl", 1.0), ("jsd", 0.3), ("jsd", 0.9)]:
        z = student.clone().requires_grad_(True)
        val = T * T * loss(kind, beta, lp, buckets(z, ids))
        val.backward()
        cases.append({"kind": kind, "beta": beta, "loss": val.item(), "grad": z.grad.flatten().tolist()})
    fixture = {
        "R": R, "V": V, "k": K, "temperature": T,
        "teacher_logits": teacher.flatten().tolist(), "student_logits": student.flatten().tolist(),
        "ids": ids.flatten().tolist(), "logp": lp[:, :K].flatten().tolist(), "log_rest": lp[:, K].tolist(),
        "cases": cases,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(fixture, f)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
