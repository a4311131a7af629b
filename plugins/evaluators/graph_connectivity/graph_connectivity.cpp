// Graph connectivity (docs/metrics.md §3.4): for each cell type, the share of its cells in the
// largest strongly connected component of the directed 15-nearest-neighbour graph restricted to
// that type (scib-metrics 0.5.1 uses the directed graph, so a cell nobody of its type points to is
// alone).
#include <algorithm>
#include <cmath>

#include "scssl/plugin.hpp"

namespace {

// Size of the largest strongly connected component of the graph on `nodes` whose edges are the
// neighbour lists (only edges between nodes count). Iterative Tarjan.
int64_t largest_scc(const std::vector<int64_t>& nodes, const int64_t* nb, int64_t k, int64_t n) {
  std::vector<int64_t> local(n, -1);
  for (size_t i = 0; i < nodes.size(); ++i) local[nodes[i]] = static_cast<int64_t>(i);
  const int64_t m = static_cast<int64_t>(nodes.size());
  std::vector<int64_t> index(m, -1), low(m, 0), stack;
  std::vector<char> on_stack(m, 0);
  std::vector<std::pair<int64_t, int64_t>> call;  // (node, next neighbour column)
  int64_t counter = 0, best = 0;
  for (int64_t root = 0; root < m; ++root) {
    if (index[root] >= 0) continue;
    call.push_back({root, 0});
    while (!call.empty()) {
      auto& [v, col] = call.back();
      if (col == 0 && index[v] < 0) {
        index[v] = low[v] = counter++;
        stack.push_back(v);
        on_stack[v] = 1;
      }
      if (col < k) {
        const int64_t target = nb[nodes[v] * k + col];
        ++col;
        const int64_t w = target >= 0 ? local[target] : -1;
        if (w < 0) continue;
        if (index[w] < 0) {
          call.push_back({w, 0});
        } else if (on_stack[w]) {
          low[v] = std::min(low[v], index[w]);
        }
        continue;
      }
      if (low[v] == index[v]) {
        int64_t size = 0, w;
        do {
          w = stack.back();
          stack.pop_back();
          on_stack[w] = 0;
          ++size;
        } while (w != v);
        best = std::max(best, size);
      }
      const int64_t finished = v;
      call.pop_back();
      if (!call.empty()) low[call.back().first] = std::min(low[call.back().first], low[finished]);
    }
  }
  return best;
}

class GraphConnectivity final : public scssl::IEvaluator {
 public:
  static std::vector<scssl::ParamSpec> parameters() {
    return {scssl::ParamSpec("k", SCSSL_PARAM_INT, "15",
                             "neighbours per cell, the cell itself included")
                .at_least(1)};
  }
  static uint64_t requirements() { return SCSSL_NEEDS_LABELS; }
  static std::vector<scssl::MetricSpec> metrics() {
    return {{"graph_connectivity", SCSSL_GROUP_BATCH, 1,
             "mean over cell types of the largest strongly connected share of the kNN graph"}};
  }
  GraphConnectivity(const scssl::ParamSet& p, scssl::HostContext& host)
      : IEvaluator(host), k_(p.get_int("k")) {}
  void evaluate(const scssl::EvalContext& ctx, const scssl::MetricSink& sink) override {
    const scssl::Column* labels = &ctx.data.require_labels("graph_connectivity");
    torch::Tensor indices = host_.neighbors(k_).first;
    const int64_t n = indices.size(0), k = indices.size(1);
    std::vector<std::vector<int64_t>> members(labels->categories.size());
    const int32_t* code = labels->codes.data_ptr<int32_t>();
    for (int64_t i = 0; i < n; ++i)
      if (code[i] >= 0) members[code[i]].push_back(i);
    double sum = 0;
    int64_t count = 0;
    // Each cell carries its type's connected share.
    torch::Tensor per_cell = torch::full({n}, std::nan(""), torch::kFloat64);
    double* pc = per_cell.data_ptr<double>();
    for (const auto& cells : members) {
      if (cells.empty()) continue;
      const double share =
          static_cast<double>(largest_scc(cells, indices.data_ptr<int64_t>(), k, n)) / cells.size();
      for (int64_t i : cells) pc[i] = share;
      sum += share;
      ++count;
    }
    if (count == 0) return sink.undefined("graph_connectivity", "no cell has a cell type");
    sink.report_cells("graph_connectivity", per_cell);
    sink.report("graph_connectivity", sum / count);
  }

 private:
  int64_t k_;
};

}  // namespace

SCSSL_PLUGIN(GraphConnectivity, "graph_connectivity", "1.0.0",
             "Graph connectivity: cell types connected in the 15-NN graph (scIB)")
