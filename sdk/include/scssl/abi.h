/*
 * scssl/abi.h - the C boundary between scssl-host and its plugins (ABI 2).
 *
 * Every plugin is one shared library exporting one C function, SCSSL_ENTRY_POINT, that returns a
 * pointer to a static scssl_plugin_info. The same description is also stored, as text, in the
 * library's ELF section SCSSL_NOTE_SECTION (written at build time by `scssl-plugin-note`, see
 * scssl_add_plugin() in scsslPlugin.cmake), so that the host checks the ABI version, the build
 * fingerprint, the kind, the name and the parameter schema before any of the plugin's code runs.
 * Only the plain C types below cross the boundary: no C++ object, no exception, no allocator.
 * This header compiles as C11 and as C++17.
 *
 * Versioning (docs/sdk-changelog.md):
 *  - SCSSL_ABI_VERSION is the major version. It changes when an existing field moves, changes
 *    type or meaning, or a struct embedded by value (scssl_matrix, scssl_instance_table,
 *    scssl_error, DLTensor) changes. The host refuses a plugin of another major version.
 *  - SCSSL_ABI_MINOR counts additions. Every struct that crosses the boundary by pointer starts
 *    with `struct_size`, the sizeof() its writer was compiled with; fields are only ever added at
 *    the end. A reader uses SCSSL_HAS_FIELD before touching a field, and treats a field its writer
 *    did not have as absent (NULL function, zero value), so an older plugin with a newer host, or
 *    the reverse, is served correctly and never read past the end. Arrays of sized structs have
 *    the stride of their first element's struct_size, and every element carries the same size.
 *
 * Rules that hold for every call:
 *  - Functions return SCSSL_OK or an error status; on error they fill scssl_error.message with one
 *    sentence naming the thing that was wrong.
 *  - Arguments are borrowed: a plugin must not keep a pointer into them after the call returns,
 *    except that the cell data given to prepare()/fit() stays valid until the instance is
 * destroyed.
 *  - Results are owned by the receiver: a DLManagedTensor is released through its deleter and a
 *    scssl_cell_data through its release callback, each exactly once.
 *  - The host keeps a library loaded while any instance or result it produced is alive.
 *
 * Threads (what the host guarantees, and what it asks of plugins):
 *  - The host calls every function of one instance from one thread at a time, never two calls on
 *    the same instance concurrently. create() and destroy() are never concurrent with any other
 *    call on that instance. Different instances (of the same or of different plugins) may be
 *    called from different threads; a plugin's global state must be safe for that.
 *  - An augmentation's apply() may run on a thread other than the one that called prepare(): the
 *    trainer builds the next mini-batch's views on a helper thread while the model steps. It is
 *    never called for two batches at once on one instance.
 *  - A plugin must not call back into the host from a thread it started itself, except where a
 *    host function below says "any thread".
 */
#ifndef SCSSL_ABI_H
#define SCSSL_ABI_H

#include <stddef.h>
#include <stdint.h>

#include <ATen/dlpack.h> /* DLTensor, DLManagedTensor: the tensor exchange format (plain C) */

#ifdef __cplusplus
extern "C" {
#endif

#define SCSSL_ABI_VERSION 2u
#define SCSSL_ABI_MINOR 2u
#define SCSSL_MAGIC 0x4c535353u /* "SSSL": first field of every info struct */
#define SCSSL_ENTRY_POINT "scssl_plugin_entry"
#define SCSSL_NOTE_SECTION ".scssl_plugin" /* ELF section holding the description as text */

#if defined(_WIN32)
#define SCSSL_EXPORT __declspec(dllexport)
#else
#define SCSSL_EXPORT __attribute__((visibility("default")))
#endif

/* True when the sized struct at pointer `s`, as its writer built it, includes `field`. */
#define SCSSL_HAS_FIELD(s, type, field) \
  ((s)->struct_size >= offsetof(type, field) + sizeof(((const type*)0)->field))

/* ---- status ------------------------------------------------------------------------------------
 */

typedef enum scssl_status {
  SCSSL_OK = 0,
  SCSSL_ERR_INVALID_ARGUMENT = 1, /* a parameter or option is unusable */
  SCSSL_ERR_BAD_DATA = 2,         /* the data is malformed or unsuitable (NaN, wrong shape, key) */
  SCSSL_ERR_IO = 3,               /* a file could not be read or written */
  SCSSL_ERR_INTERNAL = 4          /* anything else, including an exception inside the plugin */
} scssl_status;

/* Filled by the callee on error; a fixed buffer the caller owns (frozen for ABI 2). */
#define SCSSL_MESSAGE_CAPACITY 1024
typedef struct scssl_error {
  char message[SCSSL_MESSAGE_CAPACITY]; /* NUL-terminated */
} scssl_error;

/* ---- parameters --------------------------------------------------------------------------------
 */

typedef enum scssl_param_type {
  SCSSL_PARAM_BOOL = 1,
  SCSSL_PARAM_INT = 2,
  SCSSL_PARAM_FLOAT = 3,
  SCSSL_PARAM_STRING = 4,
  SCSSL_PARAM_STRING_LIST = 5,
  SCSSL_PARAM_FLOAT_LIST = 6
} scssl_param_type;

/* Bits of scssl_param_spec.flags. Bounds apply to ints, floats and every item of a float list;
 * choices apply to strings and every item of a string list. The host checks all of them, with the
 * config file and line, before the plugin sees a value. */
typedef enum scssl_param_flag {
  SCSSL_PARAM_HAS_MINIMUM = 1u << 0,
  SCSSL_PARAM_HAS_MAXIMUM = 1u << 1,
  SCSSL_PARAM_MINIMUM_EXCLUSIVE = 1u << 2, /* value > minimum rather than >= */
  SCSSL_PARAM_MAXIMUM_EXCLUSIVE = 1u << 3, /* value < maximum rather than <= */
  SCSSL_PARAM_REQUIRED = 1u << 4,          /* the config must set it (the default is not used) */
  SCSSL_PARAM_NONEMPTY = 1u << 5           /* strings and lists: must not be empty */
} scssl_param_flag;

/* One entry of a plugin's parameter schema. default_text is the default written as in a config
 * file without quotes: "true", "50", "0.5", "cell_type", and for lists items separated by ",". */
typedef struct scssl_param_spec {
  uint32_t struct_size;
  uint32_t flags; /* scssl_param_flag bits */
  const char* name;
  int32_t type; /* scssl_param_type */
  const char* default_text;
  const char* help;
  double minimum;
  double maximum;
  const char* const* choices; /* allowed strings, or NULL for any */
  int64_t n_choices;
} scssl_param_spec;

/* A parameter value handed to a plugin. The host always passes every parameter of the schema,
 * already checked against its type, bounds and choices; bools travel in int_value (0 or 1). */
typedef struct scssl_param_value {
  uint32_t struct_size;
  const char* name;
  int32_t type;
  int64_t int_value;
  double float_value;
  const char* string_value;
  const char* const* list_values;  /* SCSSL_PARAM_STRING_LIST */
  int64_t list_length;             /* items of list_values or float_list_values */
  const double* float_list_values; /* SCSSL_PARAM_FLOAT_LIST */
} scssl_param_value;

typedef struct scssl_params {
  uint32_t struct_size;
  const scssl_param_value* values;
  int64_t count;
} scssl_params;

/* ---- cell data ---------------------------------------------------------------------------------
 */

typedef enum scssl_matrix_format {
  SCSSL_MATRIX_NONE = 0,  /* absent (e.g. no raw counts) */
  SCSSL_MATRIX_DENSE = 1, /* dense: float32 [n_rows, n_cols], row-major */
  SCSSL_MATRIX_CSR = 2 /* CSR: indptr int64 [n_rows+1], indices int32 [nnz], values float32 [nnz] */
} scssl_matrix_format;

/* Embedded by value in scssl_modality: frozen for ABI 2. */
typedef struct scssl_matrix {
  int32_t format;
  int64_t n_rows;
  int64_t n_cols;
  DLTensor dense;
  DLTensor indptr;
  DLTensor indices;
  DLTensor values;
} scssl_matrix;

typedef struct scssl_modality {
  uint32_t struct_size;
  const char* name; /* "RNA", "ADT", ... */
  int64_t n_features;
  const char* const* feature_names;
  scssl_matrix X; /* the representation methods train on (preprocessed once the host has run) */
  scssl_matrix counts; /* raw counts of the same features, or SCSSL_MATRIX_NONE */
} scssl_modality;

typedef enum scssl_column_type {
  SCSSL_COLUMN_CATEGORICAL = 1, /* codes int32 [n_cells] (-1 = missing) + category names */
  SCSSL_COLUMN_NUMERIC = 2      /* values float64 [n_cells] (NaN = missing) */
} scssl_column_type;

typedef struct scssl_column {
  uint32_t struct_size;
  const char* name;
  int32_t type;
  DLTensor codes;
  int64_t n_categories;
  const char* const* categories;
  DLTensor values;
} scssl_column;

/* All cells of a data set: one or more modalities over the same cells, and per-cell columns.
 * batch_key / label_key name the columns holding batches and cell types ("" if there is none). */
typedef struct scssl_cell_data {
  uint32_t struct_size;
  int64_t n_cells;
  const char* const* cell_names;
  int64_t n_modalities;
  const scssl_modality* modalities;
  int64_t n_columns;
  const scssl_column* columns;
  const char* batch_key;
  const char* label_key;
  /* Frees every buffer above (Arrow C data interface style). NULL for borrowed data. */
  void (*release)(struct scssl_cell_data* self);
  void* private_data;
} scssl_cell_data;

/* ---- services the host offers to every instance -------------------------------------------------
 */

typedef enum scssl_log_level {
  SCSSL_LOG_DEBUG = 0,
  SCSSL_LOG_INFO = 1,
  SCSSL_LOG_WARN = 2,
  SCSSL_LOG_ERROR = 3
} scssl_log_level;

/* The host's services. Check SCSSL_HAS_FIELD before calling a function added after ABI 2.0, and
 * check for NULL: a host may leave a service out where it has none (e.g. neighbours outside
 * evaluation). Threads: "any thread" means the function may be called from any thread, also
 * concurrently; "calling thread" means only from the thread inside the host's call to the
 * plugin (a plugin's helper threads must not use it). All are re-entrant in the sense that a
 * plugin may call any of them while another instance's call is running on another thread. */
typedef struct scssl_host_api {
  uint32_t struct_size;
  uint32_t abi_version; /* the host's SCSSL_ABI_VERSION */
  uint32_t abi_minor;   /* the host's SCSSL_ABI_MINOR */
  void* host_data;      /* first argument of every function below */
  /* Any thread. One line for the run's log. */
  void (*log)(void* host_data, int32_t level, const char* message);
  /* Calling thread. Progress of a long stage: done out of total units; text is a short status
   * such as a loss. */
  void (*progress)(void* host_data, const char* stage, int64_t done, int64_t total,
                   const char* text);
  /* Inside a method's fit(), calling thread or one helper thread of the plugin at a time (the
   * trainer's view builder): applies the run's augmentation pipeline of one modality, in place,
   * to one view (0 or 1) of a mini-batch: batch float32 [b, n_features] (dense, CPU), cell_ids
   * int64 [b] (rows of the training data). Not re-entrant: one augment() call at a time. */
  scssl_status (*augment)(void* host_data, int32_t modality, int32_t view, DLTensor* batch,
                          const DLTensor* cell_ids, uint64_t seed, scssl_error* error);
  /* Any thread. Number of augmentations configured for a modality (0: views are plain copies). */
  int32_t (*augmentation_count)(void* host_data, int32_t modality);
  /* Calling thread. One point of a named series (e.g. "loss" per epoch), kept with the results. */
  void (*record)(void* host_data, const char* series, int64_t step, double value);
  /* Inside an evaluator's evaluate(), calling thread: the k nearest neighbours of every cell in
   * the embedding being evaluated (Euclidean; column 0 is the cell itself, then by distance, ties
   * by the lower index). One search at the largest k asked for serves every evaluator of the
   * embedding. indices int64 [n, k] and distances float32 [n, k] stay valid until evaluate()
   * returns. */
  scssl_status (*neighbors)(void* host_data, int64_t k, DLTensor* indices, DLTensor* distances,
                            scssl_error* error);
  /* Inside evaluate(), calling thread: the fuzzy (UMAP-style) connectivities of those
   * k-neighbour lists (docs/metrics.md §1.3), computed once per k for the embedding: a symmetric
   * CSR matrix without diagonal, columns ascending within a row. indptr int64 [n + 1], indices
   * int64 [nnz], weights float64 [nnz]; valid until evaluate() returns. */
  scssl_status (*connectivities)(void* host_data, int64_t k, DLTensor* indptr, DLTensor* indices,
                                 DLTensor* weights, scssl_error* error);
  /* Inside evaluate(), calling thread: results one evaluator shares with the others scoring the
   * same embedding, so that work two metrics have in common is done once. share_result stores a
   * copy of `value` (dense, CPU) under `key`; shared_result fills `value` with the stored tensor
   * (valid until evaluate() returns) or, when nothing is stored under `key`, sets value->data to
   * NULL. Forgotten after each embedding; outside an embedding's evaluation nothing is stored. */
  scssl_status (*share_result)(void* host_data, const char* key, const DLTensor* value,
                               scssl_error* error);
  scssl_status (*shared_result)(void* host_data, const char* key, DLTensor* value,
                                scssl_error* error);
} scssl_host_api;

/* ---- the four kinds and their function tables ---------------------------------------------------
 */

typedef enum scssl_kind {
  SCSSL_KIND_DATASET = 1,
  SCSSL_KIND_AUGMENTATION = 2,
  SCSSL_KIND_METHOD = 3,
  SCSSL_KIND_EVALUATOR = 4
} scssl_kind;

typedef void* scssl_instance;

/* Every kind but datasets makes instances; create() receives the validated parameters. Embedded
 * by value at the start of each instance-making table: frozen for ABI 2. */
typedef struct scssl_instance_table {
  scssl_status (*create)(const scssl_params* params, const scssl_host_api* host,
                         scssl_instance* out, scssl_error* error);
  void (*destroy)(scssl_instance instance);
} scssl_instance_table;

typedef struct scssl_dataset_table {
  uint32_t struct_size;
  /* Reads a data set; *out is owned by the caller, who calls its release. */
  scssl_status (*load)(const scssl_params* params, const scssl_host_api* host,
                       scssl_cell_data** out, scssl_error* error);
} scssl_dataset_table;

typedef struct scssl_augmentation_table {
  uint32_t struct_size;
  scssl_instance_table instance;
  /* Once per run, before training, on the training cells (e.g. to build neighbour graphs). */
  scssl_status (*prepare)(scssl_instance self, const scssl_cell_data* data, int32_t modality,
                          scssl_error* error);
  /* Transforms a whole mini-batch of one view in place; see scssl_host_api.augment for the
   * shapes and the thread it runs on. Most augmentations ignore the view; paired ones (CLAIRE's
   * MNN) build view 1 from a cell's partner. */
  scssl_status (*apply)(scssl_instance self, DLTensor* batch, const DLTensor* cell_ids,
                        int32_t view, uint64_t seed, scssl_error* error);
} scssl_augmentation_table;

/* What a method needs from a data set (the host refuses an unsuitable one before training), or
 * what an evaluator needs the host to compute for it. Stored in the plugin note as well. */
typedef enum scssl_requirement {
  SCSSL_NEEDS_BATCH = 1u << 0,
  SCSSL_NEEDS_LABELS = 1u << 1,
  SCSSL_NEEDS_SECOND_MODALITY = 1u << 2,
  SCSSL_NEEDS_RAW_COUNTS = 1u << 3,
  SCSSL_USES_AUGMENTATIONS = 1u << 4, /* methods: without it [[augmentation]] is refused */
  SCSSL_NEEDS_UNINTEGRATED = 1u << 5, /* evaluators: the PCA of the unintegrated data */
  SCSSL_NEEDS_QUERY_BATCHES = 1u << 6 /* evaluators: held-out query batches must be configured */
} scssl_requirement;

typedef struct scssl_train_options {
  uint32_t struct_size;
  int64_t epochs;
  int64_t batch_size;
  double learning_rate;
  double weight_decay;
  int32_t step_schedule; /* 0 constant learning rate; 1 StepLR(step_size, gamma) per epoch */
  int64_t step_size;
  double gamma;
  uint64_t seed;
  const char* device;         /* "cpu", "cuda", "cuda:1" */
  const char* checkpoint_dir; /* where checkpoints are written; "" disables them */
  int64_t checkpoint_every;   /* epochs between checkpoints */
  const char* resume_from;    /* a checkpoint folder to continue from; "" starts afresh */
  int32_t num_threads;        /* CPU threads; 0 leaves the library default */
} scssl_train_options;

typedef struct scssl_method_table {
  uint32_t struct_size;
  scssl_instance_table instance;
  scssl_status (*fit)(scssl_instance self, const scssl_cell_data* train,
                      const scssl_train_options* options, scssl_error* error);
  /* Embeds every cell of data: *out float32 [n_cells, d], owned by the caller. */
  scssl_status (*embed)(scssl_instance self, const scssl_cell_data* data, DLManagedTensor** out,
                        scssl_error* error);
  scssl_status (*save)(scssl_instance self, const char* directory, scssl_error* error);
  scssl_status (*load)(scssl_instance self, const char* directory, scssl_error* error);
} scssl_method_table;

typedef enum scssl_metric_group {
  SCSSL_GROUP_BIO = 1,        /* bio conservation (scIB) */
  SCSSL_GROUP_BATCH = 2,      /* batch correction (scIB) */
  SCSSL_GROUP_ANNOTATION = 3, /* query-to-reference cell-type annotation */
  SCSSL_GROUP_MODALITY = 4,   /* missing-modality prediction */
  SCSSL_GROUP_OTHER = 5       /* reported, never aggregated */
} scssl_metric_group;

/* Static description of one number an evaluator reports. The study's Bio/Batch/Total aggregates
 * are defined by metric name (docs/evaluation.md); a group only says where a metric is shown. */
typedef struct scssl_metric_spec {
  uint32_t struct_size;
  const char* name;
  int32_t group;
  int32_t higher_is_better;
  const char* help;
} scssl_metric_spec;

typedef struct scssl_eval_context {
  uint32_t struct_size;
  const scssl_cell_data* data; /* all cells, preprocessed, with batch and label columns */
  DLTensor embedding;          /* float32 [n_cells, d] */
  DLTensor unintegrated;       /* float32 [n_cells, p]: PCA of the unintegrated data, or empty
                                  unless the evaluator has SCSSL_NEEDS_UNINTEGRATED */
  int64_t n_query_batches;     /* batches held out from training (annotation / modality query) */
  const char* const* query_batches;
  /* Since ABI 2.2 (check with SCSSL_HAS_FIELD). Where the heavy metric kernels (distance tiles
   * of neighbour searches and silhouettes) should run: "cpu", "cuda", "cuda:1" (the run's
   * run.device). The tensors above are always in CPU memory. Absent: "cpu". */
  const char* device;
} scssl_eval_context;

typedef struct scssl_metric_sink {
  uint32_t struct_size;
  void* sink_data;
  /* Calling thread. name must be one of the evaluator's metric specs; NaN marks "not defined
   * for this data". */
  void (*report)(void* sink_data, const char* name, double value);
  /* Since ABI 2.1 (check with SCSSL_HAS_FIELD). Calling thread. The per-cell values behind metric
   * `name`: float64 [n_cells] (dense, CPU) in the data's cell order, NaN for a cell the metric
   * gives no value; a per-label score gives every cell of the label the label's value. The host
   * copies them and writes them when per-cell scores are asked for (docs/evaluation.md). */
  void (*report_cells)(void* sink_data, const char* name, const DLTensor* values);
  /* Since ABI 2.1. Calling thread. One sentence on metric `name`, kept with its value in the
   * result files: why it is NaN, or what it left out (docs/metrics.md, "Degenerate data"). */
  void (*note)(void* sink_data, const char* name, const char* text);
} scssl_metric_sink;

typedef struct scssl_evaluator_table {
  uint32_t struct_size;
  scssl_instance_table instance;
  scssl_status (*evaluate)(scssl_instance self, const scssl_eval_context* context,
                           const scssl_metric_sink* sink, scssl_error* error);
} scssl_evaluator_table;

/* ---- the plugin's self-description --------------------------------------------------------------
 */

/* What the plugin was compiled with. The host refuses a plugin whose LibTorch version or C++
 * standard library ABI differs from its own (torch types and C++ objects inside the plugin would
 * not match the host's copies of those libraries). A plain-C plugin sets torch_version and
 * cxx_stdlib to "": it shares no C++ or torch state with the host. */
typedef struct scssl_build_fingerprint {
  const char* torch_version; /* e.g. "1.13.0" */
  const char* cxx_stdlib;    /* e.g. "libstdc++ cxx11-abi" */
  const char* compiler;      /* e.g. "gcc 12.2.0"; shown, not compared */
} scssl_build_fingerprint;

typedef struct scssl_plugin_info {
  uint32_t magic;       /* SCSSL_MAGIC, checked before anything else is read */
  uint32_t abi_version; /* SCSSL_ABI_VERSION the plugin was built against */
  uint32_t struct_size; /* sizeof(scssl_plugin_info) as the plugin was built */
  uint32_t abi_minor;   /* SCSSL_ABI_MINOR the plugin was built against */
  int32_t kind;         /* scssl_kind */
  const char* name;     /* unique among loaded plugins: lower case, digits, '_' */
  const char* version;  /* the plugin's own version, e.g. "1.2.0" */
  const char* summary;  /* one line for `scssl-host list` */
  scssl_build_fingerprint build;
  uint64_t requirements; /* scssl_requirement bits (methods and evaluators) */
  const scssl_param_spec* params;
  int64_t n_params;
  const scssl_metric_spec* metrics; /* evaluators only */
  int64_t n_metrics;
  const void* table; /* scssl_dataset_table, scssl_augmentation_table, ... by kind */
} scssl_plugin_info;

typedef const scssl_plugin_info* (*scssl_entry_point_fn)(void);

/* The compiler, as text, for scssl_build_fingerprint.compiler. */
#define SCSSL_STR_(x) #x
#define SCSSL_STR(x) SCSSL_STR_(x)
#if defined(__clang__)
#define SCSSL_COMPILER                                                              \
  "clang " SCSSL_STR(__clang_major__) "." SCSSL_STR(__clang_minor__) "." SCSSL_STR( \
      __clang_patchlevel__)
#elif defined(__GNUC__)
#define SCSSL_COMPILER \
  "gcc " SCSSL_STR(__GNUC__) "." SCSSL_STR(__GNUC_MINOR__) "." SCSSL_STR(__GNUC_PATCHLEVEL__)
#else
#define SCSSL_COMPILER "unknown"
#endif

#ifdef __cplusplus
}
#endif

#endif /* SCSSL_ABI_H */
