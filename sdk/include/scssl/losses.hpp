// The SSL objectives of docs/method-spec.md §1-7 and §0.5, written once and shared by the method
// plugins. Every function takes the two views' outputs as [N, d] tensors and returns a scalar.
#pragma once

#include <torch/torch.h>

namespace scssl::losses {

// NT-Xent (SimCLR): positives are the same row in the other view, negatives the other 2N - 2 rows
// of both views; symmetric, mean over 2N rows.
torch::Tensor nt_xent(const torch::Tensor& z0, const torch::Tensor& z1, double temperature);

// InfoNCE against a memory bank (MoCo): logits [q.k, q.bank] / t, label 0, one direction.
// q, k and bank rows are L2-normalised inside; k is treated as constant.
torch::Tensor info_nce(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& bank,
                       double temperature);

// -mean cosine similarity (SimSiam's D; BYOL); b is treated as constant (stop-gradient).
torch::Tensor negative_cosine(const torch::Tensor& a, const torch::Tensor& b);

// VICReg: lambda * MSE + mu * 0.5 (V(za) + V(zb)) + nu * (C(za) + C(zb)).
torch::Tensor vicreg(const torch::Tensor& za, const torch::Tensor& zb, double lambda = 25.0,
                     double mu = 25.0, double nu = 1.0);

// Barlow Twins: sum_i (1 - c_ii)^2 + lambda_offdiag * sum_{i != j} c_ij^2 on the batch-normalised
// cross-correlation matrix. `joint`: both views standardised with the mean and variance of their
// 2N rows together, as lightly (and so the study) does; otherwise each view by its own, as the
// Barlow Twins paper (docs/method-spec.md §7).
torch::Tensor barlow_twins(const torch::Tensor& za, const torch::Tensor& zb,
                           double lambda_offdiag = 0.005, bool joint = true);

// CLIP loss between two modalities' outputs (rows paired): 0.5 (CE(s A B^T, I) + CE(s B A^T, I))
// with s = exp(logit_scale), after L2 normalisation.
torch::Tensor clip(const torch::Tensor& a, const torch::Tensor& b,
                   const torch::Tensor& logit_scale);

// A FIFO bank of the last `size` vectors (MoCo's queue, NNCLR's support set), initialised with
// random unit rows. Registered as a buffer so checkpoints carry it.
class MemoryBankImpl : public torch::nn::Module {
 public:
  MemoryBankImpl(int64_t size, int64_t dim);
  const torch::Tensor& vectors() const { return bank_; }
  // Writes rows at the pointer; rows that would run past the end are dropped and the pointer
  // wraps to 0 (lightly's behaviour).
  void enqueue(const torch::Tensor& rows);
  // For every row of z, the stored vector with the highest cosine similarity (raw, as stored).
  torch::Tensor nearest(const torch::Tensor& z) const;

 private:
  torch::Tensor bank_;
  torch::Tensor pointer_;
};
TORCH_MODULE(MemoryBank);

}  // namespace scssl::losses
