#include "scssl/pca.hpp"
#include "scssl/preprocess.hpp"
#include "support.hpp"

using namespace scssl;

namespace {

// Compares score columns up to sign (a component's sign is a convention).
double max_abs_diff_up_to_sign(const torch::Tensor& a, const torch::Tensor& b) {
  double worst = 0;
  for (int64_t c = 0; c < a.size(1); ++c) {
    const double same = (a.select(1, c) - b.select(1, c)).abs().max().item<double>();
    const double flip = (a.select(1, c) + b.select(1, c)).abs().max().item<double>();
    worst = std::max(worst, std::min(same, flip));
  }
  return worst;
}

Matrix to_csr(const torch::Tensor& dense) {
  torch::Tensor mask = dense != 0;
  torch::Tensor indptr = torch::zeros({dense.size(0) + 1}, torch::kInt64);
  indptr.slice(0, 1).copy_(mask.sum(1).cumsum(0));
  return Matrix::csr(indptr, mask.nonzero().select(1, 1).to(torch::kInt32),
                     dense.masked_select(mask), dense.size(0), dense.size(1), "test");
}

}  // namespace

TEST(Pca, MatchesSvdOfTheCentredDenseMatrix) {
  torch::manual_seed(3);
  torch::Tensor x = torch::relu(torch::randn({300, 40})) * torch::rand({1, 40}) * 5;
  PcaModel model = fit_pca(to_csr(x), 10);
  torch::Tensor scores = model.transform(to_csr(x));
  torch::Tensor centred = (x - x.mean(0, true)).to(torch::kFloat64);
  auto [u, s, vh] = torch::linalg_svd(centred, false);
  torch::Tensor expected = (u.slice(1, 0, 10) * s.slice(0, 0, 10)).to(torch::kFloat32);
  EXPECT_LT(max_abs_diff_up_to_sign(scores, expected), 1e-3);
  EXPECT_TRUE(torch::allclose(model.explained_variance, (s.slice(0, 0, 10).pow(2) / 299), 1e-6));
}

TEST(Pca, SparseAndDenseInputAgreeAndSignsAreFixed) {
  torch::manual_seed(4);
  torch::Tensor x = torch::relu(torch::randn({100, 20}));
  PcaModel sparse = fit_pca(to_csr(x), 5);
  PcaModel dense = fit_pca(Matrix::from_dense(x, "test"), 5);
  EXPECT_TRUE(torch::allclose(sparse.components, dense.components, 1e-9, 1e-9));
  // Largest-magnitude loading of every component is positive.
  torch::Tensor largest = sparse.components.abs().argmax(0);
  EXPECT_TRUE((sparse.components.gather(0, largest.unsqueeze(0)) > 0).all().item<bool>());
}

TEST(Pca, ComponentsAreClippedToTheData) {
  torch::Tensor x = torch::rand({5, 8});
  EXPECT_EQ(fit_pca(Matrix::from_dense(x, "t"), 50).n_components(), 4);
  EXPECT_THROW(fit_pca(Matrix::from_dense(torch::rand({1, 3}), "t"), 2), BadData);
}

// The reference X_pca: 50-PC PCA of normalize_total(1e4) + log1p of all 1267 genes, exact SVD.
TEST(Pca, ReproducesReferencePcaOfKangCtrlStim) {
  const std::string file = test::repo_file("tests/data/reference/kang_ctrl_stim.h5ad");
  CellData data = test::load_h5ad(file);
  Modality& rna = data.modalities.at(0);
  PreprocessOptions o;
  o.n_top_genes = 0;
  preprocess_modality(rna, o, nullptr);
  torch::Tensor ours = fit_pca(rna.X, 50).transform(rna.X);
  torch::Tensor reference = test::read_obsm(file, "X_pca");
  ASSERT_EQ(ours.sizes(), reference.sizes());
  // The leading components are well separated; the trailing ones can mix within near-equal
  // eigenvalues, so compare the first 30 column by column.
  EXPECT_LT(max_abs_diff_up_to_sign(ours.slice(1, 0, 30), reference.slice(1, 0, 30)), 2e-3);
}
