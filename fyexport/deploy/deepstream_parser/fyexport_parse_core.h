// fyexport DeepStream parser core: YOLOv7 rows -> detections, exactly as fyexport's own
// postprocess (fyexport/postprocess.py, non_max_suppression) computes them.  Plain C++17,
// no DeepStream or TensorRT header: nvdsparsebbox_fyexport.cpp calls it inside nvinfer, and
// fyexport's tests compile it alone and compare it with the Python postprocess.
//
// Decoded output "output" [N, 5 + nc] per image: cx, cy, w, h (input pixels), obj, then one
// score per class (all after the sigmoid).  For each row:
//   keep rows with obj > min(conf);  score_c = obj * cls_c (obj itself when nc == 1);
//   best class j = first argmax of score_c;  keep when score_j > conf[j];
//   box = cx -+ w/2, cy -+ h/2 (float32, as numpy computes it).
// Clustering (nms): at most max_nms candidates by score, then greedy class-aware NMS in
// descending score order (stable: ties keep row order), a box is suppressed by a kept box of
// its class with IoU > iou (IoU in double over boxes offset by class * 4096 in float32, as
// fyexport does), at most max_det kept.
//
// End-to-end NMS outputs (fyexport export --nms onnx and --nms trt-plugin both write them):
// num_dets [1] int32, det_boxes [K, 4] float32 x1, y1, x2, y2 (input pixels), det_scores [K]
// float32, det_classes [K] int32; the first num_dets rows are the detections, best first.
#ifndef FYEXPORT_PARSE_CORE_H
#define FYEXPORT_PARSE_CORE_H

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <vector>

#ifndef FYEXPORT_NMS_IOU
#define FYEXPORT_NMS_IOU 0.45
#endif
#ifndef FYEXPORT_MAX_DET
#define FYEXPORT_MAX_DET 300
#endif

namespace fyexport {

struct Detection {
    float x1, y1, x2, y2;  // input (network) pixels
    float score;
    int cls;
};

struct NmsParams {
    double iou = FYEXPORT_NMS_IOU;     // suppress IoU > iou (fyexport compares in double)
    std::size_t max_det = FYEXPORT_MAX_DET;
    std::size_t max_nms = 30000;       // candidates kept before NMS (fyexport.postprocess.MAX_NMS)
    float max_wh = 4096.0f;            // class offset (fyexport.postprocess.MAX_WH)
};

// Candidates of one image: rows [n, 5 + nc], conf[nc] per-class thresholds (score > conf).
inline std::vector<Detection> candidates(const float* rows, std::size_t n, std::size_t nc, const float* conf) {
    std::vector<Detection> out;
    if (nc == 0) return out;
    const float lowest = *std::min_element(conf, conf + nc);
    const std::size_t stride = nc + 5;
    for (std::size_t r = 0; r < n; ++r) {
        const float* x = rows + r * stride;
        const float obj = x[4];
        if (!(obj > lowest)) continue;
        std::size_t best = 0;
        float best_score = nc == 1 ? obj : x[5] * obj;
        for (std::size_t c = 1; c < nc; ++c) {
            const float s = x[5 + c] * obj;
            if (s > best_score) {
                best_score = s;
                best = c;
            }
        }
        if (!(best_score > conf[best])) continue;
        const float half_w = x[2] / 2.0f;
        const float half_h = x[3] / 2.0f;
        out.push_back({x[0] - half_w, x[1] - half_h, x[0] + half_w, x[1] + half_h, best_score, static_cast<int>(best)});
    }
    return out;
}

// Greedy class-aware NMS of candidates (in their row order); returns the kept, best first.
inline std::vector<Detection> nms(const std::vector<Detection>& cand, const NmsParams& p = NmsParams()) {
    std::vector<std::size_t> order(cand.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::stable_sort(order.begin(), order.end(),
                     [&cand](std::size_t a, std::size_t b) { return cand[a].score > cand[b].score; });
    if (order.size() > p.max_nms) order.resize(p.max_nms);
    const std::size_t n = order.size();
    std::vector<double> x1(n), y1(n), x2(n), y2(n), area(n);
    for (std::size_t k = 0; k < n; ++k) {
        const Detection& d = cand[order[k]];
        const float off = static_cast<float>(d.cls) * p.max_wh;
        x1[k] = static_cast<double>(d.x1 + off);
        y1[k] = static_cast<double>(d.y1 + off);
        x2[k] = static_cast<double>(d.x2 + off);
        y2[k] = static_cast<double>(d.y2 + off);
        area[k] = (x2[k] - x1[k]) * (y2[k] - y1[k]);
    }
    std::vector<char> removed(n, 0);
    std::vector<Detection> kept;
    for (std::size_t i = 0; i < n && kept.size() < p.max_det; ++i) {
        if (removed[i]) continue;
        kept.push_back(cand[order[i]]);
        for (std::size_t j = i + 1; j < n; ++j) {
            if (removed[j]) continue;
            const double w = std::max(std::min(x2[i], x2[j]) - std::max(x1[i], x1[j]), 0.0);
            const double h = std::max(std::min(y2[i], y2[j]) - std::max(y1[i], y1[j]), 0.0);
            const double inter = w * h;
            const double iou = inter / (area[i] + area[j] - inter + 1e-12);
            if (iou > p.iou) removed[j] = 1;
        }
    }
    return kept;
}

// The detections in one image's end-to-end NMS outputs (score > conf[class] kept, classes
// outside [0, nc) dropped).
inline std::vector<Detection> from_nms_outputs(std::int32_t num_dets, const float* boxes, const float* scores,
                                               const std::int32_t* classes, std::size_t topk, std::size_t nc,
                                               const float* conf) {
    std::vector<Detection> out;
    const std::size_t n = num_dets > 0 ? std::min(static_cast<std::size_t>(num_dets), topk) : 0;
    for (std::size_t k = 0; k < n; ++k) {
        const std::int32_t c = classes[k];
        if (c < 0 || static_cast<std::size_t>(c) >= nc) continue;
        if (!(scores[k] > conf[static_cast<std::size_t>(c)])) continue;
        const float* b = boxes + 4 * k;
        out.push_back({b[0], b[1], b[2], b[3], scores[k], static_cast<int>(c)});
    }
    return out;
}

}  // namespace fyexport

#endif  // FYEXPORT_PARSE_CORE_H
