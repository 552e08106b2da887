/* visionkit.ops._nms_native: the sequential greedy loops of hard NMS and Soft-NMS in C, for CPU tensors.
 *
 * Greedy NMS and the Soft-NMS loop are inherently sequential (each decision depends on the previous
 * ones); in eager PyTorch every step costs a few tensor operations, so the Python engines
 * (visionkit.ops._nms_core, visionkit.ops.soft_nms) vectorise around that and pay ~100 small ops per
 * call. These kernels run the loops themselves over a spatial index, with the torch engines' exact
 * IoU arithmetic (nms_impl.h). Python passes tensor data pointers (contiguous CPU tensors it owns for
 * the duration of the call); the GIL is released while a kernel runs. No Python object is touched
 * outside the argument parsing.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Relative slack on every geometric bound (far above the rounding of a float32 IoU). */
#define VK_SLACK 1e-2

/* ------------------------------------------------------------------------------------ spatial index */
/* Positive-area boxes sorted by (label, width octave, x1): a label's boxes form one "run", and inside
 * it each octave ("level") one segment sorted by x1. The level boundaries of every run are tabulated
 * (run_level_start), so a query finds a (label, level) segment in O(1) and its window by one binary
 * search on x1; when the table would be large (very many labels x levels) the boundaries are found by
 * binary search instead. */
#define VK_MIN_EXPONENT (-1100) /* frexp exponents of positive finite doubles lie in [-1073, 1024] */
#define VK_EXPONENTS 2200

typedef struct {
    int64_t size;             /* indexed boxes (positive area) */
    int64_t *box;             /* box id at each sorted position */
    double *x1;               /* x1 at each sorted position */
    int32_t *level;           /* level index at each sorted position */
    int64_t *run;             /* label run at each sorted position */
    int64_t *position;        /* sorted position of each box id, -1 when not indexed */
    int64_t *parent;          /* "next alive position" union-find over size + 1 slots */
    int num_levels;           /* width octaves present, by increasing width */
    double *level_min_width;  /* per level, over all labels */
    double *level_max_width;
    int64_t num_runs;
    int64_t *run_start;       /* num_runs + 1 sorted-position bounds */
    int64_t *run_level_start; /* num_runs x (num_levels + 1), or NULL: binary search */
} vk_index;

typedef struct {
    int64_t label;
    int level;
    double x1;
    int64_t box;
} vk_entry;

static inline int vk_entry_less(const vk_entry *a, const vk_entry *b)
{
    if (a->label != b->label) return a->label < b->label;
    if (a->level != b->level) return a->level < b->level;
    return a->x1 < b->x1;
}

/* Stable bottom-up merge sort of `type` items by LESS(a, b) (pointers): `static int name(type *, n)`,
 * 0 or -1 when out of memory. An inline comparison makes it ~3x faster than qsort here. */
#define VK_DEFINE_MERGE_SORT(name, type, LESS)                                                        \
    static int name(type *items, int64_t size)                                                       \
    {                                                                                                \
        type *buffer = malloc((size_t)(size ? size : 1) * sizeof(type));                             \
        if (!buffer) return -1;                                                                      \
        type *from = items, *to = buffer;                                                            \
        for (int64_t width = 1; width < size; width *= 2) {                                          \
            for (int64_t lo = 0; lo < size; lo += 2 * width) {                                       \
                int64_t mid = lo + width < size ? lo + width : size;                                 \
                int64_t hi = lo + 2 * width < size ? lo + 2 * width : size;                          \
                int64_t a = lo, b = mid, k = lo;                                                     \
                while (a < mid && b < hi) to[k++] = LESS(&from[b], &from[a]) ? from[b++] : from[a++]; \
                while (a < mid) to[k++] = from[a++];                                                 \
                while (b < hi) to[k++] = from[b++];                                                  \
            }                                                                                        \
            type *swap = from;                                                                       \
            from = to;                                                                               \
            to = swap;                                                                               \
        }                                                                                            \
        if (from != items) memcpy(items, from, (size_t)size * sizeof(type));                         \
        free(buffer);                                                                                \
        return 0;                                                                                    \
    }

/* By (label, level, x1); entries are created in box order, so equal keys stay in box order. */
VK_DEFINE_MERGE_SORT(vk_sort_entries, vk_entry, vk_entry_less)

static void vk_index_free(vk_index *index)
{
    free(index->box);
    free(index->x1);
    free(index->level);
    free(index->run);
    free(index->position);
    free(index->parent);
    free(index->level_min_width);
    free(index->level_max_width);
    free(index->run_start);
    free(index->run_level_start);
    memset(index, 0, sizeof(*index));
}

/* Index boxes with width[i] > 0 (and any height > 0: the caller zeroes the width otherwise).
 * Returns 0, or -1 when out of memory. */
static int vk_index_build(vk_index *index, int64_t n, const double *x1, const double *width,
                          const int64_t *labels)
{
    memset(index, 0, sizeof(*index));
    size_t slots = (size_t)(n ? n : 1);
    int level_of_exponent[VK_EXPONENTS];
    for (int e = 0; e < VK_EXPONENTS; e++) level_of_exponent[e] = -1;
    vk_entry *entries = malloc(slots * sizeof(vk_entry));
    index->position = malloc(slots * sizeof(int64_t));
    if (!entries || !index->position) goto fail;
    int64_t size = 0;
    for (int64_t i = 0; i < n; i++) {
        index->position[i] = -1;
        if (!(width[i] > 0)) continue;
        int exponent;
        frexp(width[i], &exponent);
        level_of_exponent[exponent - VK_MIN_EXPONENT] = 0; /* present; numbered below */
        entries[size].label = labels ? labels[i] : 0;
        entries[size].level = exponent;
        entries[size].x1 = x1[i];
        entries[size++].box = i;
    }
    int num_levels = 0;
    for (int e = 0; e < VK_EXPONENTS; e++)
        if (level_of_exponent[e] == 0) level_of_exponent[e] = num_levels++;
    for (int64_t p = 0; p < size; p++) entries[p].level = level_of_exponent[entries[p].level - VK_MIN_EXPONENT];
    if (vk_sort_entries(entries, size) != 0) goto fail;
    index->size = size;
    index->num_levels = num_levels;
    index->box = malloc((size_t)(size ? size : 1) * sizeof(int64_t));
    index->x1 = malloc((size_t)(size ? size : 1) * sizeof(double));
    index->level = malloc((size_t)(size ? size : 1) * sizeof(int32_t));
    index->run = malloc((size_t)(size ? size : 1) * sizeof(int64_t));
    index->parent = malloc((size_t)(size + 1) * sizeof(int64_t));
    index->run_start = malloc((size_t)(size + 1) * sizeof(int64_t));
    index->level_min_width = malloc((size_t)(num_levels ? num_levels : 1) * sizeof(double));
    index->level_max_width = malloc((size_t)(num_levels ? num_levels : 1) * sizeof(double));
    if (!index->box || !index->x1 || !index->level || !index->run || !index->parent || !index->run_start ||
        !index->level_min_width || !index->level_max_width)
        goto fail;
    for (int l = 0; l < num_levels; l++) {
        index->level_min_width[l] = INFINITY;
        index->level_max_width[l] = 0.0;
    }
    int64_t num_runs = 0;
    for (int64_t p = 0; p < size; p++) {
        int64_t i = entries[p].box;
        int l = entries[p].level;
        if (p == 0 || entries[p].label != entries[p - 1].label) index->run_start[num_runs++] = p;
        if (width[i] < index->level_min_width[l]) index->level_min_width[l] = width[i];
        if (width[i] > index->level_max_width[l]) index->level_max_width[l] = width[i];
        index->box[p] = i;
        index->x1[p] = entries[p].x1;
        index->level[p] = l;
        index->run[p] = num_runs - 1;
        index->position[i] = p;
        index->parent[p] = p;
    }
    index->parent[size] = size;
    index->run_start[num_runs] = size;
    index->num_runs = num_runs;
    /* the (run, level) table when it stays small against the boxes themselves */
    if (num_runs * (int64_t)(num_levels + 1) <= 4 * size + 4096) {
        int64_t stride = num_levels + 1;
        index->run_level_start = malloc((size_t)(num_runs * stride + 1) * sizeof(int64_t));
        if (!index->run_level_start) goto fail;
        for (int64_t r = 0; r < num_runs; r++) {
            int64_t p = index->run_start[r], end = index->run_start[r + 1];
            for (int l = 0; l <= num_levels; l++) {
                while (p < end && index->level[p] < l) p++;
                index->run_level_start[r * stride + l] = p;
            }
        }
    }
    free(entries);
    return 0;
fail:
    free(entries);
    vk_index_free(index);
    return -1;
}

/* The first alive sorted position >= p (index->size when none); path halving. */
static inline int64_t vk_find(vk_index *index, int64_t p)
{
    int64_t *parent = index->parent;
    while (parent[p] != p) {
        parent[p] = parent[parent[p]];
        p = parent[p];
    }
    return p;
}

static inline void vk_remove(vk_index *index, int64_t p) { index->parent[p] = p + 1; }

/* First position of (run, level) with x1 >= left; *end = end of that segment. */
static inline int64_t vk_window_start(const vk_index *index, int level, int64_t run, double left, int64_t *end)
{
    int64_t lo, hi;
    if (index->run_level_start) {
        const int64_t *bounds = index->run_level_start + run * (index->num_levels + 1);
        lo = bounds[level];
        hi = bounds[level + 1];
    } else {
        int64_t a = index->run_start[run], b = index->run_start[run + 1];
        while (a < b) { /* first position with level >= level */
            int64_t mid = a + (b - a) / 2;
            if (index->level[mid] < level) a = mid + 1; else b = mid;
        }
        lo = a;
        b = index->run_start[run + 1];
        while (a < b) { /* first position with level > level */
            int64_t mid = a + (b - a) / 2;
            if (index->level[mid] <= level) a = mid + 1; else b = mid;
        }
        hi = a;
    }
    *end = hi;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (index->x1[mid] < left) lo = mid + 1; else hi = mid;
    }
    return lo;
}

typedef struct {
    double key;
    int64_t index;
} vk_keyed;

static inline int vk_keyed_before(const vk_keyed *a, const vk_keyed *b) { return a->key > b->key; }

/* Decreasing score; keys travel with the ids (sequential memory access), equal keys keep id order. */
VK_DEFINE_MERGE_SORT(vk_sort_keyed, vk_keyed, vk_keyed_before)

/* Stable ranking by decreasing score: order[r] is the box of rank r (equal scores: lower index first,
 * as torch.sort(descending=True, stable=True)). Returns 0, or -1 (no memory). */
static int vk_rank(const double *scores, int64_t n, int64_t *order)
{
    vk_keyed *items = malloc((size_t)(n ? n : 1) * sizeof(vk_keyed));
    if (!items) return -1;
    for (int64_t i = 0; i < n; i++) {
        items[i].key = scores[i];
        items[i].index = i;
    }
    int status = vk_sort_keyed(items, n);
    for (int64_t r = 0; status == 0 && r < n; r++) order[r] = items[r].index;
    free(items);
    return status;
}

typedef struct {
    int64_t size;
    int64_t *node;
} vk_tree;

/* ------------------------------------------------------------------------- kernels, once per type */
#define FN(name) name##_f32
#define T float
#include "nms_impl.h"
#undef T
#undef FN
#define FN(name) name##_f64
#define T double
#include "nms_impl.h"
#undef T
#undef FN

/* --------------------------------------------------------------------------------- Python bindings */
enum { VK_FLOAT32 = 0, VK_FLOAT64 = 1 };

/* 1 when every dtype code is float32 or float64; else sets ValueError and returns 0. */
static int vk_check_codes(int first, int second)
{
    if ((first == VK_FLOAT32 || first == VK_FLOAT64) && (second == VK_FLOAT32 || second == VK_FLOAT64)) return 1;
    PyErr_SetString(PyExc_ValueError, "dtype codes must be 0 (float32) or 1 (float64)");
    return 0;
}

static PyObject *py_nms(PyObject *self, PyObject *args)
{
    int dtype;
    unsigned long long boxes, labels, keep;
    Py_ssize_t n;
    double threshold;
    (void)self;
    if (!PyArg_ParseTuple(args, "iKnKdK", &dtype, &boxes, &n, &labels, &threshold, &keep)) return NULL;
    if (!vk_check_codes(dtype, dtype)) return NULL;
    int status;
    Py_BEGIN_ALLOW_THREADS
    if (dtype == VK_FLOAT64)
        status = nms_f64((const double *)(uintptr_t)boxes, n, (const int64_t *)(uintptr_t)labels, threshold,
                         (uint8_t *)(uintptr_t)keep);
    else
        status = nms_f32((const float *)(uintptr_t)boxes, n, (const int64_t *)(uintptr_t)labels, threshold,
                         (uint8_t *)(uintptr_t)keep);
    Py_END_ALLOW_THREADS
    if (status != 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_nms_scored(PyObject *self, PyObject *args)
{
    int dtype, score_dtype;
    unsigned long long boxes, scores, labels, out;
    Py_ssize_t n;
    double threshold;
    (void)self;
    if (!PyArg_ParseTuple(args, "iKiKnKdK", &dtype, &boxes, &score_dtype, &scores, &n, &labels, &threshold,
                          &out))
        return NULL;
    if (!vk_check_codes(dtype, score_dtype)) return NULL;
    int64_t count = -1;
    Py_BEGIN_ALLOW_THREADS
    double *keys = malloc((size_t)(n ? n : 1) * sizeof(double));
    if (keys) {
        for (Py_ssize_t i = 0; i < n; i++) /* exact: float32 and float64 scores keep their order */
            keys[i] = score_dtype == VK_FLOAT64 ? ((const double *)(uintptr_t)scores)[i]
                                                : (double)((const float *)(uintptr_t)scores)[i];
        if (dtype == VK_FLOAT64)
            count = nms_scored_f64((const double *)(uintptr_t)boxes, keys, n, (const int64_t *)(uintptr_t)labels,
                                   threshold, (int64_t *)(uintptr_t)out);
        else
            count = nms_scored_f32((const float *)(uintptr_t)boxes, keys, n, (const int64_t *)(uintptr_t)labels,
                                   threshold, (int64_t *)(uintptr_t)out);
        free(keys);
    }
    Py_END_ALLOW_THREADS
    if (count < 0) return PyErr_NoMemory();
    return PyLong_FromLongLong(count);
}

static PyObject *py_soft_nms(PyObject *self, PyObject *args)
{
    int dtype, gaussian;
    unsigned long long boxes, scores, labels, out_ids, out_scores;
    Py_ssize_t n;
    double sigma, iou_threshold, score_threshold;
    (void)self;
    if (!PyArg_ParseTuple(args, "iKKnKpdddKK", &dtype, &boxes, &scores, &n, &labels, &gaussian, &sigma,
                          &iou_threshold, &score_threshold, &out_ids, &out_scores))
        return NULL;
    if (!vk_check_codes(dtype, dtype)) return NULL;
    int64_t count;
    Py_BEGIN_ALLOW_THREADS
    if (dtype == VK_FLOAT64)
        count = soft_nms_f64((const double *)(uintptr_t)boxes, (const double *)(uintptr_t)scores, n,
                             (const int64_t *)(uintptr_t)labels, gaussian, sigma, iou_threshold,
                             score_threshold, (int64_t *)(uintptr_t)out_ids, (double *)(uintptr_t)out_scores);
    else
        count = soft_nms_f32((const float *)(uintptr_t)boxes, (const float *)(uintptr_t)scores, n,
                             (const int64_t *)(uintptr_t)labels, gaussian, sigma, iou_threshold,
                             score_threshold, (int64_t *)(uintptr_t)out_ids, (float *)(uintptr_t)out_scores);
    Py_END_ALLOW_THREADS
    if (count < 0) return PyErr_NoMemory();
    return PyLong_FromLongLong(count);
}

static PyMethodDef methods[] = {
    {"nms", py_nms, METH_VARARGS,
     "nms(dtype, boxes_ptr, n, labels_ptr, threshold, keep_ptr): greedy NMS over score-ranked boxes."},
    {"nms_scored", py_nms_scored, METH_VARARGS,
     "nms_scored(dtype, boxes_ptr, score_dtype, scores_ptr, n, labels_ptr, threshold, out_ptr) -> count: "
     "rank by score, greedy NMS, kept ids in rank order."},
    {"soft_nms", py_soft_nms, METH_VARARGS,
     "soft_nms(dtype, boxes_ptr, scores_ptr, n, labels_ptr, gaussian, sigma, iou_threshold, score_threshold, "
     "out_ids_ptr, out_scores_ptr) -> count: the Soft-NMS loop."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_nms_native",
    .m_doc = "Sequential NMS / Soft-NMS loops in C (see nms_module.c).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__nms_native(void) { return PyModule_Create(&module); }
