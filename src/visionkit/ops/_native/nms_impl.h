/* Greedy NMS and Soft-NMS kernels for one working type, included once per type by nms_module.c.
 *
 * Expects: T (float or double), FN(name) (name with the type suffix). Box ``i`` is row ``i`` of a
 * contiguous ``T[n][4]`` xyxy array. The IoU arithmetic is exactly visionkit's torch engines'
 * (visionkit.ops._nms_core.gathered_iou) in T: width = min(x2) - max(x1) clamped at 0 (same for the
 * height), inter = width * height, union = (area_a + area_b) - inter, iou = inter / union, with
 * area = clamp(x2 - x1, 0) * clamp(y2 - y1, 0); thresholds are compared in T, as torch compares a
 * float32 tensor with a Python float. So both backends see bit-identical IoUs.
 *
 * Candidates come from a spatial index (vk_index, nms_module.c): positive-area boxes grouped by
 * label and width octave ("level"), sorted by x1. A pair with IoU > t (t >= 0) overlaps in x, and
 * IoU <= overlap width / max width and <= min width / max width, so for a query box M of width w the
 * partners of a level lie within x1 in [x1_M - min((1 - t) / t * w, max width of the level),
 * x1_M + (1 - t) * w] and only levels with widths in (t * w, w / t) can hold any; a relative slack
 * keeps every bound above the rounding of the computed IoU. Removed boxes (kept, suppressed,
 * selected, dropped) are skipped through union-find "next alive" pointers, so a scan only meets boxes
 * that can still change.
 */

static inline T FN(area)(const T *box)
{
    T w = box[2] - box[0], h = box[3] - box[1];
    if (w < 0) w = 0;
    if (h < 0) h = 0;
    return w * h;
}

static inline T FN(iou)(const T *a, T area_a, const T *b, T area_b)
{
    T w = (a[2] < b[2] ? a[2] : b[2]) - (a[0] > b[0] ? a[0] : b[0]);
    T h = (a[3] < b[3] ? a[3] : b[3]) - (a[1] > b[1] ? a[1] : b[1]);
    if (w < 0) w = 0;
    if (h < 0) h = 0;
    T inter = w * h;
    T uni = (area_a + area_b) - inter;
    return inter / uni; /* 0/0 = NaN: never "> t", as in the torch engines */
}

/* Build the index of the positive-area boxes among ``member`` (NULL: all boxes). */
static int FN(build_index)(vk_index *index, const T *boxes, int64_t n, const int64_t *labels,
                           const uint8_t *member)
{
    double *x1 = malloc((size_t)(n ? n : 1) * sizeof(double));
    double *width = malloc((size_t)(n ? n : 1) * sizeof(double));
    if (!x1 || !width) {
        free(x1);
        free(width);
        return -1;
    }
    for (int64_t i = 0; i < n; i++) {
        const T *box = boxes + 4 * i;
        int positive = box[2] - box[0] > 0 && box[3] - box[1] > 0 && (!member || member[i]);
        x1[i] = (double)box[0];
        width[i] = positive ? (double)box[2] - (double)box[0] : 0.0;
    }
    int status = vk_index_build(index, n, x1, width, labels);
    free(x1);
    free(width);
    return status;
}

/* Visit the alive indexed partners of box ``m`` that can reach IoU > t with it; calls VISIT(p, j). */
#define VK_SCAN(index, boxes, m, t, VISIT)                                                           \
    do {                                                                                             \
        const T *box_m_ = (boxes) + 4 * (m);                                                         \
        double x1_m_ = (double)box_m_[0], w_m_ = (double)box_m_[2] - (double)box_m_[0];              \
        int64_t run_m_ = (index)->run[(index)->position[m]]; /* the caller checked position >= 0 */  \
        double reach_ = (t) > 0 ? (1.0 - (t)) / (t) * w_m_ : INFINITY;                               \
        double right_ = x1_m_ + (1.0 - (t)) * w_m_ * (1 + VK_SLACK) + VK_SLACK * w_m_;               \
        for (int level_ = 0; level_ < (index)->num_levels; level_++) {                               \
            if ((t) > 0 && ((index)->level_max_width[level_] < (t) * w_m_ * (1 - VK_SLACK) ||        \
                            (index)->level_min_width[level_] > w_m_ / (t) * (1 + VK_SLACK)))         \
                continue;                                                                            \
            double half_ = reach_ < (index)->level_max_width[level_] ? reach_                        \
                                                                     : (index)->level_max_width[level_]; \
            double left_ = x1_m_ - half_ * (1 + VK_SLACK) - VK_SLACK * w_m_;                         \
            int64_t end_;                                                                            \
            int64_t p_ = vk_window_start((index), level_, run_m_, left_, &end_);                     \
            for (p_ = vk_find((index), p_); p_ < end_ && (index)->x1[p_] <= right_;                  \
                 p_ = vk_find((index), p_ + 1)) {                                                    \
                int64_t j_ = (index)->box[p_];                                                       \
                VISIT(p_, j_);                                                                       \
            }                                                                                        \
        }                                                                                            \
    } while (0)

/* Greedy hard NMS over boxes already ranked by score: keep[i] = 1 iff no kept box of lower rank (and
 * the same label) has IoU > threshold with box i. Returns 0, or -1 when out of memory. */
static int FN(nms)(const T *boxes, int64_t n, const int64_t *labels, double threshold, uint8_t *keep)
{
    vk_index index;
    T *areas = malloc((size_t)(n ? n : 1) * sizeof(T));
    uint8_t *suppressed = calloc((size_t)(n ? n : 1), 1);
    if (!areas || !suppressed || FN(build_index)(&index, boxes, n, labels, NULL) != 0) {
        free(areas);
        free(suppressed);
        return -1;
    }
    const T t = (T)threshold;
    for (int64_t i = 0; i < n; i++)
        areas[i] = FN(area)(boxes + 4 * i);
    for (int64_t m = 0; m < n; m++) {
        keep[m] = !suppressed[m];
        if (suppressed[m] || index.position[m] < 0)
            continue; /* a zero-area box suppresses nothing (its IoUs are 0 or NaN) */
        vk_remove(&index, index.position[m]);
        const T *box_m = boxes + 4 * m;
#define VK_SUPPRESS(p, j)                                                                           \
    if (FN(iou)(box_m, areas[m], boxes + 4 * (j), areas[j]) > t) {                                  \
        suppressed[j] = 1;                                                                          \
        vk_remove(&index, p);                                                                       \
    }
        VK_SCAN(&index, boxes, m, threshold, VK_SUPPRESS);
#undef VK_SUPPRESS
    }
    vk_index_free(&index);
    free(areas);
    free(suppressed);
    return 0;
}

/* Hard NMS over unranked boxes: ranks them by score (descending, lower index first on ties), runs
 * FN(nms) and writes the kept box ids in rank order to out. Returns their number, or -1 (no memory). */
static int64_t FN(nms_scored)(const T *boxes, const double *scores, int64_t n, const int64_t *labels,
                              double threshold, int64_t *out)
{
    int64_t *order = malloc((size_t)(n ? n : 1) * sizeof(int64_t));
    T *ranked = malloc((size_t)(n ? 4 * n : 1) * sizeof(T));
    int64_t *ranked_labels = labels ? malloc((size_t)(n ? n : 1) * sizeof(int64_t)) : NULL;
    uint8_t *keep = malloc((size_t)(n ? n : 1));
    int64_t count = -1;
    if (!order || !ranked || (labels && !ranked_labels) || !keep || vk_rank(scores, n, order) != 0)
        goto done;
    for (int64_t r = 0; r < n; r++) {
        memcpy(ranked + 4 * r, boxes + 4 * order[r], 4 * sizeof(T));
        if (labels) ranked_labels[r] = labels[order[r]];
    }
    if (FN(nms)(ranked, n, ranked_labels, threshold, keep) != 0) goto done;
    count = 0;
    for (int64_t r = 0; r < n; r++)
        if (keep[r]) out[count++] = order[r];
done:
    free(order);
    free(ranked);
    free(ranked_labels);
    free(keep);
    return count;
}

/* Tournament tree over box ids: node[1] is the best alive box (highest score, lowest id on ties;
 * -1: none). Leaves are node[size + i]; updating a leaf replays its path towards the root. */
static inline int64_t FN(better)(const T *scores, int64_t a, int64_t b)
{
    if (a < 0) return b;
    if (b < 0) return a;
    return (scores[a] > scores[b] || (scores[a] == scores[b] && a < b)) ? a : b;
}

static int FN(tree_init)(vk_tree *tree, const T *scores, const uint8_t *alive, int64_t n)
{
    int64_t size = 1;
    while (size < n) size <<= 1;
    tree->size = size;
    tree->node = malloc((size_t)(2 * size) * sizeof(int64_t));
    if (!tree->node) return -1;
    for (int64_t i = 0; i < size; i++)
        tree->node[size + i] = i < n && alive[i] ? i : -1;
    for (int64_t k = size - 1; k >= 1; k--)
        tree->node[k] = FN(better)(scores, tree->node[2 * k], tree->node[2 * k + 1]);
    return 0;
}

static inline void FN(tree_update)(vk_tree *tree, const T *scores, const uint8_t *alive, int64_t leaf)
{
    int64_t k = tree->size + leaf;
    tree->node[k] = alive[leaf] ? leaf : -1;
    for (k >>= 1; k >= 1; k >>= 1) {
        int64_t old = tree->node[k];
        tree->node[k] = FN(better)(scores, tree->node[2 * k], tree->node[2 * k + 1]);
        if (old != leaf && tree->node[k] == old)
            break; /* this node's winner and its score are unchanged: so are its ancestors' */
    }
}

/* Soft-NMS (Bodla et al. 2017), the sequential loop: select the best alive box (highest score, lowest
 * index on ties), then decay every alive box of the same label that interacts with it (linear:
 * IoU > iou_threshold, score *= 1 - IoU; gaussian: IoU > 0, score *= exp(-IoU^2 / sigma)) and drop
 * boxes whose score is no longer >= score_threshold. Writes the selections in order to out_ids and
 * their scores at selection to out_scores; returns their number, or -1 when out of memory. */
static int64_t FN(soft_nms)(const T *boxes, const T *scores_in, int64_t n, const int64_t *labels,
                            int gaussian, double sigma, double iou_threshold, double score_threshold,
                            int64_t *out_ids, T *out_scores)
{
    const T score_min = (T)score_threshold, sig = (T)sigma, nt = (T)iou_threshold;
    const double interaction = gaussian ? 0.0 : iou_threshold;
    T *scores = malloc((size_t)(n ? n : 1) * sizeof(T));
    T *areas = malloc((size_t)(n ? n : 1) * sizeof(T));
    uint8_t *alive = malloc((size_t)(n ? n : 1));
    vk_tree tree = {0};
    vk_index index;
    if (!scores || !areas || !alive) {
        free(scores);
        free(areas);
        free(alive);
        return -1;
    }
    for (int64_t i = 0; i < n; i++) {
        scores[i] = scores_in[i];
        areas[i] = FN(area)(boxes + 4 * i);
        alive[i] = scores[i] >= score_min;
    }
    if (FN(build_index)(&index, boxes, n, labels, alive) != 0 || FN(tree_init)(&tree, scores, alive, n) != 0) {
        vk_index_free(&index);
        free(scores);
        free(areas);
        free(alive);
        return -1;
    }
    int64_t count = 0;
    for (int64_t m = tree.node[1]; m >= 0; m = tree.node[1]) {
        out_ids[count] = m;
        out_scores[count++] = scores[m];
        alive[m] = 0;
        FN(tree_update)(&tree, scores, alive, m);
        if (index.position[m] < 0)
            continue; /* zero area: decays nothing */
        vk_remove(&index, index.position[m]);
        const T *box_m = boxes + 4 * m;
#define VK_DECAY(p, j)                                                                              \
    {                                                                                               \
        T iou_ = FN(iou)(box_m, areas[m], boxes + 4 * (j), areas[j]);                               \
        if (gaussian ? iou_ > (T)0 : iou_ > nt) {                                                   \
            T factor_ = gaussian ? (T)exp((double)(-(iou_ * iou_) / sig)) : (T)1 - iou_;            \
            scores[j] = scores[j] * factor_;                                                        \
            if (!(scores[j] >= score_min)) {                                                        \
                alive[j] = 0;                                                                       \
                vk_remove(&index, p);                                                               \
            }                                                                                       \
            FN(tree_update)(&tree, scores, alive, j);                                               \
        }                                                                                           \
    }
        VK_SCAN(&index, boxes, m, interaction, VK_DECAY);
#undef VK_DECAY
    }
    vk_index_free(&index);
    free(tree.node);
    free(scores);
    free(areas);
    free(alive);
    return count;
}

