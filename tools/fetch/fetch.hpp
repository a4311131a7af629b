// scssl-fetch MANIFEST.toml (also `scssl-host fetch`): gets the file of one catalog data set
// (datasets/*.toml) with libcurl, checks its SHA-256, converts it to .h5ad where it is published
// compressed, checks that it opens with the manifest's keys and moves it into place. The manifest
// schema is in docs/datasets.md.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace scssl::fetch {

// What fetch needs from a manifest; every key of the schema is required (unknown values are
// written as "" or 0), so a missing key is an error naming the key and the file.
struct DatasetManifest {
  std::string path;  // the manifest file itself
  std::string name;
  std::string title;
  std::vector<std::string> modalities;
  int64_t n_cells = 0;     // of the file fetch produces; 0 = unknown
  int64_t n_features = 0;  // 0 = unknown
  std::string licence;
  std::string citation, doi;
  // [source]: the download and how to turn it into an .h5ad.
  std::string page;        // where a person reads about the data
  std::string url;         // "" = no public download of this file is known
  std::string format;      // "h5ad", "h5ad.gz" or "zip"
  std::string member;      // the .h5ad inside a zip
  std::string sha256;      // of the download; "" = not pinned yet
  int64_t size_bytes = 0;  // of the download; 0 = unknown
  // [file]: what lands in the target folder.
  std::string file_name;
  std::string file_sha256;  // of the .h5ad; "" = same as sha256 (format h5ad) or not pinned
  // [dataset]: the run-config section for the h5ad plugin (without its path).
  std::string batch_key, label_key, modality_key, layer;
};

// Reads and checks a manifest; InvalidArgument "<file>: ..." naming the missing or wrong key.
DatasetManifest load_manifest(const std::string& path);

// Lower-case hex SHA-256 of bytes or of a file's content (libcrypto); IoError if unreadable.
std::string sha256_hex(const std::string& bytes);
std::string sha256_file(const std::string& path);

// Fetches the data set of `manifest` into `into` (default: a folder named after the data set next
// to the manifest); an existing file is checked, and replaced only with `force`. Returns the exit
// code; errors throw (one message each) and leave the target folder as it was.
int fetch_dataset(const std::string& manifest, const std::string& into, bool force);

}  // namespace scssl::fetch
