/*
 * cnn.h - the C API of SwiftCNN (libcnn.so).
 *
 * Everything public is in this file: a function that is not declared here is not part of the API.
 *
 * CONVENTIONS
 *
 *   Status codes. Every function that can fail returns a cnn_status: CNN_OK (0) on success, one
 *   of the CNN_* codes below otherwise. cnn_status_string() turns a code into a static text;
 *   cnn_last_error() gives the detailed message of the last failure on the calling thread (what
 *   was wrong and where: the argument, the file, the byte). The library never calls exit() or
 *   abort(), and never writes to stdout or stderr.
 *
 *   Outputs on error. Arguments marked OUT are written only on success, except where a function
 *   says otherwise; on error they are left untouched (handles stay NULL if they were NULL).
 *
 *   Ownership. Handles (cnn_model, cnn_dataset) are created by cnn_*_create/load/from_* and
 *   freed by cnn_*_free; freeing NULL is a harmless no-op, and a handle that is not live (already
 *   freed, or never created) is rejected with CNN_INVALID_ARGUMENT rather than dereferenced.
 *   Strings returned by the library are owned by it: static texts live forever; texts of a model
 *   (architecture, summary, class names) stay valid until the model is freed or trained again;
 *   cnn_last_error()'s text is valid until the next failing call on the same thread. Data passed
 *   in (images, labels, names) is copied: the caller may free it as soon as the call returns.
 *
 *   Tensors. Images are float32, NCHW (batch, channels, height, width), contiguous, with pixel
 *   values in [0, 1]; a model applies its own stored normalization. The uint8 variants take HWC
 *   bytes per image (NHWC for a batch, as images are usually stored) where v means v/255.
 *   Scores and probabilities are [n, classes], row-major.
 *
 *   Threads. Prediction and evaluation may be called from many threads at once on one model.
 *   Training needs the model exclusively: any call on a model that is being trained (and training
 *   a model that is predicting) returns CNN_BUSY instead of corrupting it. Datasets are read-only
 *   once created and may be shared. cnn_set_num_threads() sets the worker threads of the whole
 *   library; results are bit-identical whatever the number.
 *
 *   Determinism. One seed fixes initialization (cnn_model_create), the order of the samples, and
 *   dropout: the same calls give byte-identical model files.
 *
 * A WORKED EXAMPLE
 *
 *   cnn_model *model = NULL;
 *   cnn_dataset *train = NULL;
 *   if (cnn_model_create("input(1,28,28) conv(32,3,pad=1) relu maxpool(2) flatten dense(10)",
 *                        1, &model) != CNN_OK ||
 *       cnn_dataset_from_idx("train-images-idx3-ubyte.gz", NULL, &train) != CNN_OK) {
 *       fprintf(stderr, "%s\n", cnn_last_error());
 *       return 1;
 *   }
 *   cnn_train_params params;
 *   cnn_train_params_default(&params);
 *   params.epochs = 2;
 *   params.momentum = 0.9f;
 *   if (cnn_model_train(model, train, &params) != CNN_OK) fprintf(stderr, "%s\n", cnn_last_error());
 *   cnn_model_save(model, "model.safetensors");
 *   float probabilities[10];
 *   cnn_model_predict(model, image, 1, probabilities);   // image: 1*28*28 floats in [0, 1]
 *   cnn_dataset_free(train);
 *   cnn_model_free(model);
 */
#ifndef CNN_H
#define CNN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Versions ------------------------------------------------------------------------------ */

#define CNN_VERSION_MAJOR 0
#define CNN_VERSION_MINOR 4
#define CNN_VERSION_PATCH 0
/* MAJOR * 10000 + MINOR * 100 + PATCH. */
#define CNN_VERSION_NUMBER (CNN_VERSION_MAJOR * 10000 + CNN_VERSION_MINOR * 100 + CNN_VERSION_PATCH)

/* The version of the library loaded at run time, as CNN_VERSION_NUMBER: compare the two to check
 * that the header and the library match. */
int32_t cnn_version_number(void);

/* The same as "MAJOR.MINOR.PATCH", a static string. */
const char *cnn_version_string(void);

/* What this process runs on, for logs and bug reports: a static string such as
 * "kernels: avx512; cpu: avx512; threads: 2". The kernels are chosen once, at the first call into
 * the library, from what the CPU and OS support (AVX-512, AVX2 + FMA, or the x86-64-v2 baseline);
 * the environment variable CNN_CPU=avx512|avx2|baseline caps the level. A CNN_CPU the CPU cannot
 * honour (or that names no level) is refused: "kernels: none (why)", and every call that can fail
 * fails with CNN_INVALID_ARGUMENT and that reason. */
const char *cnn_runtime_info(void);

/* ---- Errors -------------------------------------------------------------------------------- */

typedef int32_t cnn_status;

enum {
    CNN_OK = 0,
    CNN_INVALID_ARGUMENT = 1, /* a NULL or dead handle, a bad pointer, size, shape or enum value */
    CNN_PARSE_ERROR = 2,      /* an architecture text that does not parse */
    CNN_IO_ERROR = 3,         /* a file that cannot be opened, read or written */
    CNN_BAD_FORMAT = 4,       /* a file whose bytes are not what its format requires */
    CNN_SHAPE_MISMATCH = 5,   /* data whose shape or classes do not fit the model */
    CNN_OUT_OF_MEMORY = 6,    /* a request larger than the library's limits */
    CNN_DIVERGED = 7,         /* training stopped: the loss became NaN or infinite */
    CNN_CANCELLED = 8,        /* training stopped by the progress callback */
    CNN_BUSY = 9,             /* the model is being trained (or used) by another call */
    CNN_INTERNAL = 10         /* a bug in the library */
};

/* A static text for a status code ("ok", "invalid argument", ...); "unknown status" for any
 * other value. Never NULL. */
const char *cnn_status_string(cnn_status status);

/* The detailed message of the last failure on the calling thread, or "" if none. Never NULL. */
const char *cnn_last_error(void);

/* ---- Threads ------------------------------------------------------------------------------- */

/* Sets the number of threads the library uses, 1 to 256 (1: the calling thread only).
 * Returns CNN_INVALID_ARGUMENT for any other value. Results do not depend on it.
 * Default: the environment variable CNN_NUM_THREADS (1 to 256), else the number of CPUs the
 * process may run on (its affinity mask, capped by a cgroup CPU quota). */
cnn_status cnn_set_num_threads(int32_t threads);

/* The number of threads the library uses. */
int32_t cnn_get_num_threads(void);

/* ---- Memory -------------------------------------------------------------------------------- */

/* The most memory one call may allocate, in bytes: loading a dataset or a model, building a model,
 * a training run, a prediction. Sizes are computed from shapes and headers and checked against it
 * before anything is allocated, and memory for file contents grows with the bytes actually read
 * (a header's claim is never allocated up front). A request over the limit, or one the system
 * refuses (ulimit -v, a cgroup's limit), gets CNN_OUT_OF_MEMORY with what needed how much.
 * Default: CNN_MEMORY_LIMIT from the environment (bytes, or with a K, M, G or T suffix), else half
 * the machine's physical memory, at least 1 GiB. bytes must be at least 1 MiB
 * (CNN_INVALID_ARGUMENT otherwise). The setting is global to the process. */
cnn_status cnn_set_memory_limit(int64_t bytes);

/* The limit in force, in bytes. */
int64_t cnn_get_memory_limit(void);

/* ---- Datasets ------------------------------------------------------------------------------ */

/* A set of labelled images held by the library (as bytes when it was given bytes). */
typedef struct cnn_dataset cnn_dataset;

/* Creates a dataset from float32 images.
 *   images      IN  [n, channels, height, width] float32, finite, pixel values in [0, 1]
 *   labels      IN  [n] int32, each in 0 .. num_classes-1
 *   n, channels, height, width  > 0
 *   num_classes IN  1 .. 65536
 *   dataset     OUT the new dataset; free it with cnn_dataset_free
 * Copies the data. Returns CNN_INVALID_ARGUMENT for NULL pointers, sizes <= 0, non-finite pixels
 * or labels out of range; CNN_OUT_OF_MEMORY when n*channels*height*width exceeds 2^32. */
cnn_status cnn_dataset_from_float(const float *images, const int32_t *labels, int32_t n,
                                  int32_t channels, int32_t height, int32_t width,
                                  int32_t num_classes, cnn_dataset **dataset);

/* Creates a dataset from 8-bit images, stored as [n, height, width, channels] (NHWC) bytes, where
 * a value v means v/255. Otherwise as cnn_dataset_from_float. */
cnn_status cnn_dataset_from_uint8(const uint8_t *images, const int32_t *labels, int32_t n,
                                  int32_t channels, int32_t height, int32_t width,
                                  int32_t num_classes, cnn_dataset **dataset);

/* Loads IDX files (the MNIST / Fashion-MNIST format), plain or gzip-compressed.
 *   images_path IN  the images file
 *   labels_path IN  the labels file, or NULL to find it beside the images by the standard name
 *                   (train-images-idx3-ubyte[.gz] -> train-labels-idx1-ubyte[.gz])
 *   dataset     OUT the new dataset
 * Class names come from a classes.txt beside the images (one per line), else "0", "1", ...
 * Returns CNN_IO_ERROR for missing files, CNN_BAD_FORMAT for bad magic numbers, sizes, gzip
 * data, or a labels file that does not match the images. */
cnn_status cnn_dataset_from_idx(const char *images_path, const char *labels_path,
                                cnn_dataset **dataset);

/* How images are brought to the network's input size. */
enum { CNN_FIT_CROP = 0, CNN_FIT_STRETCH = 1, CNN_FIT_PAD = 2 };

/* Options of cnn_dataset_from_folder. Start from cnn_folder_options_default(). */
typedef struct cnn_folder_options {
    uint32_t struct_size;      /* sizeof(cnn_folder_options), set by cnn_folder_options_default */
    int32_t fit;               /* CNN_FIT_CROP (default: resize to cover, center-crop), _STRETCH, _PAD */
    int32_t strict;            /* 1: a file that cannot be decoded (or decodes with a libjpeg warning,
                                  such as a premature end of data) is an error; 0 (default): it is
                                  skipped and reported by cnn_dataset_skipped_file */
    int32_t apply_exif_orientation; /* 1 (default): phone photos come out upright */
    int32_t max_scans;         /* progressive scans accepted, default 100 */
    int64_t max_pixels;        /* width * height accepted, checked before decoding; default 64,000,000 */
    int64_t cache_bytes;       /* decoded images are kept in memory up to this size (default 2 GiB);
                                  beyond, they are decoded again for each batch, ahead of training */
    /* Since 0.2: */
    int64_t max_bytes;         /* memory one image's decoding may take: libjpeg's working memory
                                  (a progressive file holds 2 bytes per pixel and component) and
                                  the decoded pixels; default 256 MiB, at least 65536; also capped
                                  by cnn_set_memory_limit */
} cnn_folder_options;

/* Fills options with the defaults above. */
void cnn_folder_options_default(cnn_folder_options *options);

/* Loads root/<class name>/<image>.jpg (also .jpeg and .png, any case): class names are the folder
 * names, sorted; every image is decoded once (JPEG: grayscale, RGB, CMYK, YCCK; baseline or
 * progressive. PNG: gray, RGB, palette, with or without alpha, 8 or 16 bits, interlaced; alpha is
 * dropped) and brought to channels x height x width (channels 1 or 3; use cnn_model_input_shape).
 * A file's contents decide its format, not its extension. Every file that is not used is listed
 * by cnn_dataset_skipped_file with the reason: one that does not decode, hidden files, files of
 * other types, files outside the class folders.
 *   root     IN  the folder
 *   options  IN  NULL for the defaults
 *   dataset  OUT the new dataset
 * Returns CNN_INVALID_ARGUMENT for a root that is not a folder, has no class folders, or a class
 * folder with no image; CNN_BAD_FORMAT when no file decodes, or (strict) for the first bad file. */
cnn_status cnn_dataset_from_folder(const char *root, int32_t channels, int32_t height, int32_t width,
                                   const cnn_folder_options *options, cnn_dataset **dataset);

/* The number of files that were skipped while loading a folder dataset. */
cnn_status cnn_dataset_skipped_count(const cnn_dataset *dataset, int32_t *count);

/* Skipped file `index` (0 .. count-1): its path and why, both owned by the dataset. */
cnn_status cnn_dataset_skipped_file(const cnn_dataset *dataset, int32_t index, const char **path,
                                    const char **reason);

/* Splits a dataset by a seeded shuffle: round(fraction * n) samples (at least 1) go to second,
 * the rest to first. fraction must be in (0, 1) and the dataset hold at least 2 samples. */
cnn_status cnn_dataset_split(const cnn_dataset *dataset, float fraction, uint64_t seed,
                             cnn_dataset **first, cnn_dataset **second);

/* Frees a dataset. NULL is a harmless no-op. */
void cnn_dataset_free(cnn_dataset *dataset);

/* The dataset's size. Every OUT pointer may be NULL when that value is not wanted. */
cnn_status cnn_dataset_shape(const cnn_dataset *dataset, int32_t *n, int32_t *channels,
                             int32_t *height, int32_t *width, int32_t *num_classes);

/* Copies images first .. first+count-1 out of the dataset.
 *   images OUT [count, channels, height, width] float32 in [0, 1], or NULL
 *   labels OUT [count] int32, or NULL
 * Returns CNN_INVALID_ARGUMENT when the range is not inside 0 .. n-1. */
cnn_status cnn_dataset_get(const cnn_dataset *dataset, int32_t first, int32_t count, float *images,
                           int32_t *labels);

/* The name of class index (0 .. num_classes-1), owned by the dataset ("0", "1", ... when nothing
 * named the classes); valid until the names are set again or the dataset is freed. */
cnn_status cnn_dataset_class_name(const cnn_dataset *dataset, int32_t index, const char **name);

/* The file sample `index` (0 .. n-1) was decoded from (folder datasets), owned by the dataset;
 * *path is set to NULL for datasets made from memory or IDX files. */
cnn_status cnn_dataset_sample_path(const cnn_dataset *dataset, int32_t index, const char **path);

/* Names the classes: count must equal the dataset's number of classes; names are copied, each
 * non-NULL UTF-8. A model trained on the dataset takes the names. */
cnn_status cnn_dataset_set_class_names(cnn_dataset *dataset, const char *const *names,
                                       int32_t count);

/* ---- Models -------------------------------------------------------------------------------- */

/* A network with its weights, class names and input normalization. */
typedef struct cnn_model cnn_model;

/* Creates a model from an architecture text (see README.md, "The architecture language"),
 * initialized from seed (He for layers followed by ReLU, Glorot otherwise).
 *   architecture IN  e.g. "input(1,28,28) conv(32,3,pad=1) relu maxpool(2) flatten dense(10)"
 *   model        OUT the new model; free it with cnn_model_free
 * Returns CNN_PARSE_ERROR with the token, its line and column for a text that does not parse,
 * CNN_INVALID_ARGUMENT for layers that do not fit together (e.g. dense on an image). */
cnn_status cnn_model_create(const char *architecture, uint64_t seed, cnn_model **model);

/* Loads a model file (safetensors), or imports an ONNX model when path ends in ".onnx" (what
 * torch.onnx.export or cnn_model_export_onnx writes; the supported ops are listed in README.md).
 * The file is untrusted: every offset, size and shape is checked before use; an ONNX graph the
 * engine cannot express fails whole, naming the first unsupported node, its op and why.
 * Returns CNN_IO_ERROR or CNN_BAD_FORMAT. */
cnn_status cnn_model_load(const char *path, cnn_model **model);

/* Flags of cnn_model_load_flags. */
enum { CNN_LOAD_ALLOW_NON_FINITE = 1 }; /* accept tensors holding NaN or infinity (to inspect a broken file) */

/* As cnn_model_load, with flags: 0 or CNN_LOAD_ALLOW_NON_FINITE. cnn_model_load refuses a file
 * whose tensors hold NaN or infinity (CNN_BAD_FORMAT, naming the tensor). Other bits:
 * CNN_INVALID_ARGUMENT. */
cnn_status cnn_model_load_flags(const char *path, uint32_t flags, cnn_model **model);

/* Saves the model as safetensors, atomically: a temporary file beside path is written, flushed
 * and renamed, so an existing file at path is either replaced whole or left as it was. */
cnn_status cnn_model_save(cnn_model *model, const char *path);

/* Writes the model as ONNX (opset 17), atomically, for ONNX Runtime and other runtimes: input
 * "pixels" (batch, C, H, W) of values in [0, 1] as cnn_model_predict takes them (the model's
 * normalization is the graph's first nodes), outputs "logits" and "probabilities", the batch
 * dimension dynamic; class names and the architecture text in its metadata. Loading the file back
 * (cnn_model_load) gives the same architecture and the same weights, bit for bit. */
cnn_status cnn_model_export_onnx(cnn_model *model, const char *path);

/* Fine-tuning: a new model that is MODEL with its last layer, a dense layer, replaced by a new one
 * for CLASSES outputs, initialized from SEED as a new model's would be; every other tensor, the
 * normalization and the image fit are kept, and the class names are 0, 1, ... until training names
 * them. Free it with cnn_model_free. Train it with freeze_until set to keep what came before. */
cnn_status cnn_model_new_head(cnn_model *model, int32_t classes, uint64_t seed, cnn_model **out);

/* Frees a model. NULL is a harmless no-op. Returns nothing; a model being trained by another
 * thread is freed when that training returns. */
void cnn_model_free(cnn_model *model);

/* The input shape of one image. Every OUT pointer may be NULL. */
cnn_status cnn_model_input_shape(const cnn_model *model, int32_t *channels, int32_t *height,
                                 int32_t *width);

/* The number of classes (the size of the network's output). */
cnn_status cnn_model_num_classes(const cnn_model *model, int32_t *num_classes);

/* The name of class index (0 .. num_classes-1), owned by the model. */
cnn_status cnn_model_class_name(const cnn_model *model, int32_t index, const char **name);

/* The number of trainable parameters. */
cnn_status cnn_model_parameter_count(const cnn_model *model, int64_t *count);

/* The canonical architecture text, owned by the model. */
cnn_status cnn_model_architecture(const cnn_model *model, const char **text);

/* A table of the layers with output shapes, parameters and FLOPs, owned by the model. */
cnn_status cnn_model_summary(const cnn_model *model, const char **text);

/* The same table with each layer's forward time per prediction (ms) and its share, measured over
 * `rounds` predictions (1 .. 1000000) of `batch` random images (1 .. 4096) after one to warm up,
 * on the threads cnn_set_num_threads set; blocks' inner layers have their own. Where a network's
 * time goes, layer by layer, as the engine runs it (`cnn summary --time`). The text is owned by
 * the model, valid until the next call of this function on it or a change of the model. */
cnn_status cnn_model_summary_timed(const cnn_model *model, int32_t batch, int32_t rounds, const char **text);

/* Class names and labels must agree between data and model: a dataset whose classes are named
 * (class folders, classes.txt, cnn_dataset_set_class_names) is evaluated or trained on a model
 * that names its classes (trained on named data) only when its label i has the name of the
 * model's class i (it may lack the model's last classes); otherwise the call fails with
 * CNN_SHAPE_MISMATCH naming both lists. Where the dataset or the model has no names (the numbers
 * "0", "1", ...), only the count is checked. This function maps instead: a new
 * dataset with the same images whose labels are the model's indices of the same class names (a
 * test folder that lacks some classes or orders them otherwise). Every class of data must be one
 * of the model's (CNN_SHAPE_MISMATCH otherwise). */
cnn_status cnn_dataset_map_classes(const cnn_dataset *data, const cnn_model *model, cnn_dataset **mapped);

/* ---- Training ------------------------------------------------------------------------------ */

enum { CNN_OPTIMIZER_SGD = 0, CNN_OPTIMIZER_RMSPROP = 1, CNN_OPTIMIZER_ADAM = 2, CNN_OPTIMIZER_ADAMW = 3 };
enum { CNN_SCHEDULE_CONSTANT = 0, CNN_SCHEDULE_STEP = 1, CNN_SCHEDULE_COSINE = 2 };
enum { CNN_LOSS_CROSS_ENTROPY = 0, CNN_LOSS_MSE = 1 };

/* What the progress callback sees: after every batch, and once more at the end of each epoch
 * (epoch_end = 1, with the validation results when a validation set was given). */
typedef struct cnn_progress {
    int32_t epoch;             /* 0-based */
    int32_t epochs;
    int32_t batch;             /* 0-based within the epoch */
    int32_t batches;           /* per epoch */
    float loss;                /* mean training loss of the epoch so far */
    float accuracy;            /* training accuracy of the epoch so far */
    float images_per_second;
    float learning_rate;
    int32_t epoch_end;         /* 1 on the call after an epoch's last batch */
    int32_t has_validation;    /* 1 when val_loss and val_accuracy are set */
    float val_loss;
    float val_accuracy;
    /* Since 0.4 (written only for callers whose params.struct_size includes save_best): */
    int32_t best;              /* epoch end: 1 when the monitored validation metric is the best so far */
    int32_t stops_early;       /* epoch end: 1 when early stopping ends the run after this epoch */
} cnn_progress;

/* Return 0 to continue, non-zero to cancel: training stops with CNN_CANCELLED and the model keeps
 * its last completed update. Called on the thread that called cnn_model_train (or cnn_trainer_run).
 * During an epoch-end call (epoch_end = 1) that thread may read the model being trained: save it
 * (cnn_model_save), predict, evaluate, ask its names; other threads still get CNN_BUSY. */
typedef int32_t (*cnn_progress_fn)(const cnn_progress *progress, void *user_data);

/* Training settings. Always start from cnn_train_params_default(): it sets struct_size, which
 * lets later versions add fields at the end without breaking programs built against this one. */
typedef struct cnn_train_params {
    uint32_t struct_size;      /* sizeof(cnn_train_params), set by cnn_train_params_default */
    int32_t epochs;            /* default 1 */
    int32_t batch_size;        /* default 64 */
    int32_t optimizer;         /* CNN_OPTIMIZER_*, default SGD */
    float learning_rate;       /* default 0.01 */
    float momentum;            /* SGD, default 0 */
    int32_t nesterov;          /* SGD, 0 or 1 */
    float weight_decay;        /* default 0 (decoupled for AdamW) */
    float beta1, beta2;        /* Adam, defaults 0.9, 0.999 */
    float alpha;               /* RMSProp, default 0.99 */
    float eps;                 /* Adam, RMSProp, default 1e-8 */
    int32_t schedule;          /* CNN_SCHEDULE_*, default constant */
    int32_t step_epochs;       /* step schedule: epochs between decays, default 10 */
    float gamma;               /* step schedule: decay factor, default 0.1 */
    float warmup_epochs;       /* linear warm-up, default 0 */
    int32_t loss;              /* CNN_LOSS_*, default cross-entropy */
    float label_smoothing;     /* default 0 */
    uint64_t seed;             /* shuffling and dropout, default 1 */
    int32_t threads;           /* > 0: cnn_set_num_threads(threads) first; 0 (default): unchanged */
    const cnn_dataset *validation; /* evaluated after every epoch, or NULL */
    cnn_progress_fn progress;  /* or NULL */
    void *user_data;           /* passed to progress */
    /* Augmentation of training images, drawn from seed (never applied at evaluation). */
    int32_t augment_flip;      /* 1: random horizontal flips */
    int32_t augment_translate; /* random translation by up to this many pixels (pad and crop) */
    float augment_brightness;  /* random brightness change up to this much (pixels in [0, 1]) */
    float augment_contrast;    /* random contrast change up to this factor */
    int32_t loader_threads;    /* threads preparing batches ahead (decoding, augmentation), default 1 */
    /* Since 0.2: */
    float divergence_factor;   /* the divergence guard stops training (CNN_DIVERGED) when a batch's
                                  mean loss exceeds this multiple of the run's first batch loss (at
                                  least 1); default 1000, 0 turns this check off. A NaN or infinite
                                  loss, gradient or weight always stops training. */
    /* Since 0.4: */
    int32_t allow_extra_outputs; /* 0 (default): a model with more outputs than the data has classes
                                  is refused (CNN_SHAPE_MISMATCH); 1: accepted, the extra outputs
                                  are trained towards probability 0 */
    int32_t early_stopping;    /* stop when the monitored validation metric has not improved for this
                                  many epochs; 0 (default): off. Needs validation. */
    int32_t monitor;           /* CNN_MONITOR_VAL_LOSS (default) or CNN_MONITOR_VAL_ACCURACY: what
                                  early_stopping, save_best and cnn_progress.best watch */
    const char *save_best;     /* a path, or NULL: the model is saved there (atomically) at the end
                                  of every epoch whose monitored metric is the best so far. Needs
                                  validation. */
    int32_t decay_bias_and_norm; /* default 1 (as PyTorch): weight_decay applies to every parameter;
                                  0: not to biases and batch-norm parameters */
    float augment_erase;       /* random erasing's probability, default 0: a rectangle of 2-33 % of
                                  the image, aspect 0.3-3.3, filled with the image's mean */
    int32_t freeze_until;      /* fine-tuning: only layers from this index of the top sequence on
                                  train (cnn_model_summary numbers them); the layers before run as at
                                  inference (batch norm on its running statistics, no dropout) and
                                  get no gradients and no updates. Default 0: none frozen. */
    int32_t distributed;       /* 1: data-parallel training over MPI. This process is one rank of
                                  mpi_comm; every rank calls cnn_model_train with the same model,
                                  settings and data; batch_size is the global batch, which must
                                  split evenly over the ranks; gradients are summed across ranks
                                  before every update, so every rank ends with the same model
                                  (in a /dev/shm segment when all ranks share one machine, else
                                  by MPI's all-reduce; CNN_DISTRIBUTED_SHARED=0 asks for it).
                                  Open MPI (libmpi.so.40, or CNN_MPI_LIBRARY) is loaded at run time;
                                  MPI is initialized (and finalized at exit) unless the program did.
                                  Errors inside training stop every rank at the same batch; a rank
                                  that fails before training starts (bad params) leaves the others
                                  waiting: call MPI_Abort on an error. Default 0: alone. */
    void *mpi_comm;            /* with distributed: the communicator (Open MPI's MPI_Comm), or NULL
                                  for MPI_COMM_WORLD */
    int32_t recompute_blocks;  /* 1: less memory for more time: the top-level blocks (residual,
                                  concat) keep nothing of their layers for backward, which runs each
                                  block forward again first (gradient checkpointing, a block a
                                  segment). The same results bit for bit. Default 0. */
} cnn_train_params;

enum { CNN_MONITOR_VAL_LOSS = 0, CNN_MONITOR_VAL_ACCURACY = 1 };

/* Fills params with the defaults above. */
void cnn_train_params_default(cnn_train_params *params);

/* Trains the model on data with mini-batches drawn from a fresh seeded permutation each epoch.
 * The first training measures the input normalization (per-channel mean and std) on data and
 * stores it in the model, and takes the dataset's class names when their count matches.
 * Returns CNN_INVALID_ARGUMENT for bad settings (struct_size too small, values out of range),
 * CNN_SHAPE_MISMATCH when the images or classes do not fit the model, CNN_OUT_OF_MEMORY when the
 * run (parameters, optimizer state, a batch's working memory) needs more than the memory limit,
 * CNN_CANCELLED, CNN_BUSY, and CNN_DIVERGED when the loss, a gradient or an updated weight became
 * NaN or infinite or the loss exploded (divergence_factor): the model is then left with weights
 * whose loss was finite and within bounds (the update that broke them is undone, with its
 * optimizer state and batch-norm statistics), never with non-finite weights. */
cnn_status cnn_model_train(cnn_model *model, const cnn_dataset *data,
                           const cnn_train_params *params);

/* ---- Training in steps --------------------------------------------------------------------- */

/* A training run that lives across calls: an application trains in steps (an epoch at a time,
 * between its own work), checkpoints, and resumes, with the same bytes as one cnn_model_train
 * call with the same params. While a trainer exists the model may be used for prediction and
 * evaluation between runs, but not trained by other calls (CNN_BUSY). */
typedef struct cnn_trainer cnn_trainer;

/* Creates a trainer for model on data with params (copied, with params->validation and
 * params->save_best; the datasets must stay alive until the trainer is freed). params->epochs
 * is the length of the whole run (what a learning-rate schedule spans). Errors as
 * cnn_model_train's checks of settings. */
cnn_status cnn_trainer_create(cnn_model *model, const cnn_dataset *data, const cnn_train_params *params,
                              cnn_trainer **trainer);

/* Trains up to `epochs` more epochs (at least 1), stopping at params->epochs or when early
 * stopping ends the run. A run cancelled by the progress callback (CNN_CANCELLED) goes on from
 * the next batch at the next call. Other errors as cnn_model_train. */
cnn_status cnn_trainer_run(cnn_trainer *trainer, int32_t epochs);

/* Where the run stands. Every OUT pointer may be NULL.
 *   epoch    OUT epochs completed
 *   batch    OUT batches completed in the epoch under way (0 between epochs)
 *   finished OUT 1 when the run is over (all epochs done, or stopped early) */
cnn_status cnn_trainer_progress(const cnn_trainer *trainer, int32_t *epoch, int32_t *batch,
                                int32_t *finished);

/* Saves the model with the run's state (optimizer, generator, settings, position), atomically:
 * a checkpoint that cnn_trainer_resume, `cnn train --resume` and Python continue exactly. */
cnn_status cnn_trainer_save_checkpoint(cnn_trainer *trainer, const char *path);

/* Loads a checkpoint into the trainer and its model (weights, statistics, names, optimizer state,
 * position). The checkpoint must have the model's architecture and the trainer's settings
 * (params->epochs may differ): a difference is refused with CNN_INVALID_ARGUMENT naming it. */
cnn_status cnn_trainer_resume(cnn_trainer *trainer, const char *path);

/* Frees a trainer (the model and datasets stay). NULL is a harmless no-op. */
void cnn_trainer_free(cnn_trainer *trainer);

/* ---- Evaluation and inference ------------------------------------------------------------- */

typedef struct cnn_evaluation {
    int32_t count;             /* images evaluated */
    float loss;                /* mean cross-entropy */
    float accuracy;            /* fraction whose top class is the label */
} cnn_evaluation;

/* Evaluates the model (dropout off, batch norm on running statistics).
 *   result    OUT loss and accuracy
 *   confusion OUT NULL, or [num_classes, num_classes] int32: confusion[true * classes + predicted]
 * Returns CNN_SHAPE_MISMATCH when the data does not fit the model. */
cnn_status cnn_model_evaluate(cnn_model *model, const cnn_dataset *data, cnn_evaluation *result,
                              int32_t *confusion);

/* Class probabilities (softmax) of n images.
 *   images        IN  [n, channels, height, width] float32 in [0, 1] (the model normalizes)
 *   n             IN  1 .. 2^24
 *   probabilities OUT [n, num_classes], caller-allocated; unchanged on error
 * Non-finite pixels are rejected with CNN_INVALID_ARGUMENT. */
cnn_status cnn_model_predict(cnn_model *model, const float *images, int32_t n,
                             float *probabilities);

/* As cnn_model_predict, but writes the raw scores (logits) before the softmax. */
cnn_status cnn_model_predict_logits(cnn_model *model, const float *images, int32_t n,
                                    float *logits);

/* As cnn_model_predict, for 8-bit images stored [n, height, width, channels] (NHWC). */
cnn_status cnn_model_predict_uint8(cnn_model *model, const uint8_t *images, int32_t n,
                                   float *probabilities);

/* Class probabilities of one JPEG (or PNG) image in memory: decoded (JPEG with DCT scaling when it
 * is much larger than the input), brought to the input size the way the model's training data was
 * (crop by default), normalized like it. size: 1 .. 2^30. Returns CNN_BAD_FORMAT with the decoder's
 * message for data that is not a valid JPEG or PNG, CNN_SHAPE_MISMATCH for models whose input has neither 1 nor
 * 3 channels. options: NULL for the defaults (only its decoding limits are used). */
cnn_status cnn_model_predict_jpeg(cnn_model *model, const uint8_t *data, size_t size,
                                  const cnn_folder_options *options, float *probabilities);

/* As cnn_model_predict_jpeg, for a file. Returns CNN_IO_ERROR when it cannot be read. */
cnn_status cnn_model_predict_jpeg_file(cnn_model *model, const char *path,
                                       const cnn_folder_options *options, float *probabilities);

/* Class probabilities of one 8-bit image of any size, [height, width, channels] bytes (HWC; channels
 * 1 = gray, 3 = RGB, 4 = RGBA whose alpha is dropped), rows `stride` bytes apart (0: width *
 * channels). It is brought to the input exactly as the model's training images were (the fit of
 * its folder: crop, stretch or pad, the same resampling, gray <-> RGB) and normalized like them.
 * height, width: 1 .. 2^15 each. Returns CNN_SHAPE_MISMATCH for models whose input has neither 1
 * nor 3 channels. */
cnn_status cnn_model_predict_image(cnn_model *model, const uint8_t *pixels, int32_t height, int32_t width,
                                   int32_t channels, int32_t stride, float *probabilities);

/* The k highest scores of each of n rows of [n, classes] scores, highest first (ties: lower
 * index first).
 *   indices OUT [n, k] class indices
 *   values  OUT [n, k] scores, or NULL
 * k must be 1 .. classes. */
cnn_status cnn_top_k(const float *scores, int32_t n, int32_t classes, int32_t k,
                     int32_t *indices, float *values);

#ifdef __cplusplus
}
#endif

#endif /* CNN_H */
