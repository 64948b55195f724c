"""The sparse autoencoder module of the SAE detectors (imported when one is trained: it needs torch)."""

from __future__ import annotations

import torch


class SparseAutoencoder(torch.nn.Module):
    """ReLU SAE: z = relu(W_enc (x - b_dec) + b_enc), x_hat = W_dec z + b_dec.

    Loss = mean squared error per dimension + l1 * sum_i |z_i| ||W_dec[:, i]|| (the decoder
    norm in the penalty stops the SAE from shrinking latents by growing the decoder).
    """

    def __init__(self, d: int, n_latents: int):
        super().__init__()
        w = torch.randn(d, n_latents)
        w = w / w.norm(dim=0, keepdim=True)
        self.w_dec = torch.nn.Parameter(w.clone())
        self.w_enc = torch.nn.Parameter(w.T.clone())
        self.b_enc = torch.nn.Parameter(torch.zeros(n_latents))
        self.b_dec = torch.nn.Parameter(torch.zeros(d))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(n, d) -> (n, n_latents) non-negative latents."""
        return torch.relu((x - self.b_dec) @ self.w_enc.T + self.b_enc)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(n, n_latents) -> (n, d) reconstruction."""
        return z @ self.w_dec.T + self.b_dec

    def loss(self, x: torch.Tensor, l1: float) -> torch.Tensor:
        z = self.encode(x)
        mse = (self.decode(z) - x).pow(2).mean()
        return mse + l1 * (z * self.w_dec.norm(dim=0)).sum(dim=1).mean()
