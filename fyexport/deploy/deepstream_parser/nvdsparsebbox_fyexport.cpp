// nvinfer bounding-box parsers for models exported by fyexport (written by
// 'fyexport deepstream'; build with the Makefile beside this file).
//
//   NvDsInferParseFyexport            decoded output "output" [N, 5 + nc]: decode and
//                                     class-aware NMS as fyexport does (nvinfer cluster-mode=4);
//                                     end-to-end NMS outputs num_dets, det_boxes, det_scores,
//                                     det_classes (export --nms onnx or trt-plugin): read as is.
//   NvDsInferParseFyexportCandidates  decoded output only: the thresholded candidates, for
//                                     nvinfer's own clustering (cluster-mode=2).
//
// nvinfer passes one image's tensors at a time (batch axis removed), on the host. Scores are
// compared with the config's pre-cluster-threshold per class (score > threshold); the NMS IoU
// and the number of detections kept are compiled in (FYEXPORT_NMS_IOU, FYEXPORT_MAX_DET: see
// the Makefile). Boxes are returned in network pixels, clipped to the network input.
#include "nvdsinfer_custom_impl.h"

#include "fyexport_parse_core.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <vector>

namespace {

constexpr int kInt64 = 4;  // NvDsInferDataType INT64 (DeepStream 7.1+; absent from older headers)

const NvDsInferLayerInfo* findLayer(const std::vector<NvDsInferLayerInfo>& layers, const char* name) {
    for (const NvDsInferLayerInfo& layer : layers) {
        if (layer.layerName != nullptr && std::strcmp(layer.layerName, name) == 0) return &layer;
    }
    return nullptr;
}

bool fail(const char* what) {
    std::cerr << "fyexport parser: " << what << "\n";
    return false;
}

// Per-class thresholds for nc classes (nvinfer sizes them by num-detected-classes).
bool thresholds(const NvDsInferParseDetectionParams& params, std::size_t nc, std::vector<float>& conf) {
    if (params.numClassesConfigured != nc || params.perClassPreclusterThreshold.size() < nc) {
        std::cerr << "fyexport parser: the model has " << nc << " classes but num-detected-classes is "
                  << params.numClassesConfigured << "; set num-detected-classes=" << nc << "\n";
        return false;
    }
    conf.assign(params.perClassPreclusterThreshold.begin(), params.perClassPreclusterThreshold.begin() +
                static_cast<std::ptrdiff_t>(nc));
    return true;
}

void appendObjects(const std::vector<fyexport::Detection>& dets, const NvDsInferNetworkInfo& net,
                   std::vector<NvDsInferObjectDetectionInfo>& objects) {
    const float w = static_cast<float>(net.width);
    const float h = static_cast<float>(net.height);
    for (const fyexport::Detection& d : dets) {
        const float x1 = std::min(std::max(d.x1, 0.0f), w);
        const float y1 = std::min(std::max(d.y1, 0.0f), h);
        const float x2 = std::min(std::max(d.x2, 0.0f), w);
        const float y2 = std::min(std::max(d.y2, 0.0f), h);
        NvDsInferObjectDetectionInfo obj{};
        obj.classId = static_cast<unsigned int>(d.cls);
        obj.left = x1;
        obj.top = y1;
        obj.width = x2 - x1;
        obj.height = y2 - y1;
        obj.detectionConfidence = d.score;
        objects.push_back(obj);
    }
}

// The decoded output's rows, classes and thresholds, or false with the reason printed.
bool decodedLayer(const NvDsInferLayerInfo& out, const NvDsInferParseDetectionParams& params, std::size_t& rows,
                  std::size_t& nc, std::vector<float>& conf) {
    if (out.dataType != FLOAT) return fail("'output' is not float32; export it with fyexport");
    if (out.inferDims.numDims != 2 || out.inferDims.d[1] < 6) {
        return fail("'output' is not [N, 5 + classes] per image");
    }
    rows = out.inferDims.d[0];
    nc = out.inferDims.d[1] - 5;
    return thresholds(params, nc, conf);
}

std::int32_t firstInt(const NvDsInferLayerInfo& layer) {
    if (static_cast<int>(layer.dataType) == kInt64) {
        return static_cast<std::int32_t>(*static_cast<const std::int64_t*>(layer.buffer));
    }
    return *static_cast<const std::int32_t*>(layer.buffer);
}

bool parseNmsOutputs(const std::vector<NvDsInferLayerInfo>& layers, const NvDsInferNetworkInfo& net,
                     const NvDsInferParseDetectionParams& params, std::vector<NvDsInferObjectDetectionInfo>& objects) {
    const NvDsInferLayerInfo* num = findLayer(layers, "num_dets");
    const NvDsInferLayerInfo* boxes = findLayer(layers, "det_boxes");
    const NvDsInferLayerInfo* scores = findLayer(layers, "det_scores");
    const NvDsInferLayerInfo* classes = findLayer(layers, "det_classes");
    if (num == nullptr || boxes == nullptr || scores == nullptr || classes == nullptr) {
        return fail("the model has neither 'output' nor the four NMS outputs num_dets, det_boxes, det_scores, "
                    "det_classes; give nvinfer a model exported by fyexport");
    }
    if (boxes->dataType != FLOAT || scores->dataType != FLOAT || boxes->inferDims.numDims != 2 ||
        boxes->inferDims.d[1] != 4) {
        return fail("det_boxes must be float32 [K, 4] and det_scores float32 [K]");
    }
    const std::size_t topk = boxes->inferDims.d[0];
    if (scores->inferDims.numElements < topk || classes->inferDims.numElements < topk ||
        num->inferDims.numElements < 1) {
        return fail("num_dets, det_scores and det_classes must have 1, K and K values per image");
    }
    std::vector<std::int32_t> cls(topk);
    for (std::size_t k = 0; k < topk; ++k) {
        cls[k] = static_cast<int>(classes->dataType) == kInt64
                     ? static_cast<std::int32_t>(static_cast<const std::int64_t*>(classes->buffer)[k])
                     : static_cast<const std::int32_t*>(classes->buffer)[k];
    }
    const std::size_t nc = params.numClassesConfigured;
    std::vector<float> conf(params.perClassPreclusterThreshold.begin(), params.perClassPreclusterThreshold.end());
    conf.resize(nc, 0.0f);
    const std::vector<fyexport::Detection> dets = fyexport::from_nms_outputs(
        firstInt(*num), static_cast<const float*>(boxes->buffer), static_cast<const float*>(scores->buffer),
        cls.data(), topk, nc, conf.data());
    appendObjects(dets, net, objects);
    return true;
}

}  // namespace

extern "C" bool NvDsInferParseFyexport(std::vector<NvDsInferLayerInfo> const& outputLayersInfo,
                                       NvDsInferNetworkInfo const& networkInfo,
                                       NvDsInferParseDetectionParams const& detectionParams,
                                       std::vector<NvDsInferObjectDetectionInfo>& objectList) {
    const NvDsInferLayerInfo* out = findLayer(outputLayersInfo, "output");
    if (out == nullptr) return parseNmsOutputs(outputLayersInfo, networkInfo, detectionParams, objectList);
    std::size_t rows = 0, nc = 0;
    std::vector<float> conf;
    if (!decodedLayer(*out, detectionParams, rows, nc, conf)) return false;
    const float* data = static_cast<const float*>(out->buffer);
    appendObjects(fyexport::nms(fyexport::candidates(data, rows, nc, conf.data())), networkInfo, objectList);
    return true;
}

extern "C" bool NvDsInferParseFyexportCandidates(std::vector<NvDsInferLayerInfo> const& outputLayersInfo,
                                                 NvDsInferNetworkInfo const& networkInfo,
                                                 NvDsInferParseDetectionParams const& detectionParams,
                                                 std::vector<NvDsInferObjectDetectionInfo>& objectList) {
    const NvDsInferLayerInfo* out = findLayer(outputLayersInfo, "output");
    if (out == nullptr) return fail("NvDsInferParseFyexportCandidates needs the decoded output 'output'");
    std::size_t rows = 0, nc = 0;
    std::vector<float> conf;
    if (!decodedLayer(*out, detectionParams, rows, nc, conf)) return false;
    const float* data = static_cast<const float*>(out->buffer);
    appendObjects(fyexport::candidates(data, rows, nc, conf.data()), networkInfo, objectList);
    return true;
}

CHECK_CUSTOM_PARSE_FUNC_PROTOTYPE(NvDsInferParseFyexport);
CHECK_CUSTOM_PARSE_FUNC_PROTOTYPE(NvDsInferParseFyexportCandidates);
