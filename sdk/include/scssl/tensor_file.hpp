// Tensors from other programs' checkpoint files: PyTorch's torch.save archives and safetensors
// (docs/method-spec.md §21). The reader interprets only what state dicts are made of and never
// executes or imports anything from the file.
#pragma once

#include <torch/types.h>

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

namespace torch::nn {
class Module;
}

namespace scssl {

// The tensors of one file by dotted name ("model_state_dict.encoder.weight"; integer dictionary
// keys are written in decimal, list items by position; a file of one bare tensor gives the empty
// name), in the order the file holds them.
struct TensorFile {
  std::string path;
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  // Dotted names of the entries that are not tensors (numbers, strings, lists of numbers, None,
  // empty containers, a state dict's _metadata, safetensors' __metadata__), read and left out.
  std::vector<std::string> skipped;

  // nullptr when the file has no tensor of that name.
  const torch::Tensor* find(const std::string& name) const;
};

// Reads a torch.save zip archive (.pt, .pth, .bin; PyTorch >= 1.6) or a safetensors file, told
// apart by their first bytes. Floating-point tensors come back as float32 (float16, bfloat16 and
// float64 are converted), integer and boolean tensors keep their type; every tensor owns its
// memory. BadData naming the file and the fault for anything else: a pickle global other than the
// few state dicts use (named in the message), a truncated or compressed archive, sizes or offsets
// outside the file, nesting deeper than 64 (every refusal: docs/method-spec.md §21.9); IoError
// when the file cannot be read.
TensorFile read_tensor_file(const std::string& path);
// The same from bytes in memory; `name` stands for the file in messages.
TensorFile read_tensor_file(const void* data, std::size_t size, const std::string& name);

// How a file's names become a module's parameter and buffer names.
struct TensorNameMap {
  // Only entries under this dotted prefix are considered, with the prefix removed (for example
  // "model_state_dict." for a checkpoint that also holds optimizer state). Empty: all entries.
  std::string prefix;
  // Removes a leading "module." (left by torch.nn.DataParallel) from every name.
  bool strip_module_prefix = true;
  // Substring replacements applied in order to every name, after the two steps above (scGPT's
  // flash-attention layout: {"self_attn.Wqkv.", "self_attn.in_proj_"}).
  std::vector<std::pair<std::string, std::string>> renames;
  // Entries (after renaming) starting with one of these are not loaded and not refused: parts of
  // the original model this one does not build, such as pretraining heads.
  std::vector<std::string> ignored_prefixes;
  // Loads only the entries that match a module tensor by name and shape and leaves every other
  // module tensor as it is, refusing nothing: for a model that extends or reshapes the file's
  // (fine-tuning adds heads and widens decoders).
  bool partial = false;
};

// Copies the file's tensors into `module`'s parameters and buffers (converted to their dtype and
// device) and returns the names of the module tensors it set. Unless names.partial: BadData
// naming the file and the tensor when a module tensor has no entry, when shapes differ (both
// shapes in the message), or when an entry matches no module tensor and is not ignored; nothing
// is changed unless every tensor fits.
std::vector<std::string> load_tensors(torch::nn::Module& module, const TensorFile& file,
                                      const TensorNameMap& names);

}  // namespace scssl
