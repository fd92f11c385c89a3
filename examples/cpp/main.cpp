// fyexport_detect: load a fyexport TensorRT engine and its model.engine.json, letterbox an
// image exactly as fyexport does (aspect-preserving INTER_LINEAR resize, grey 114 padding,
// RGB, /255, NCHW), run inference, apply class-aware NMS and print (or draw) detections.
//
//   fyexport_detect model.engine image.jpg [out.jpg] [conf=0.25] [iou=0.45]
//
// Uses only TensorRT calls common to 10.x and 11.x: name-based I/O (getNbIOTensors,
// getIOTensorName, setInputShape, setTensorAddress) and enqueueV3.  Expects the plain
// decoded output "output" [B, N, 5 + nc] (export without --nms), or the four NMS outputs.
#include <NvInfer.h>
#include <cuda_runtime_api.h>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <numeric>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct Logger : nvinfer1::ILogger {
    void log(Severity severity, const char* msg) noexcept override {
        if (severity <= Severity::kWARNING) std::cerr << "[TensorRT] " << msg << "\n";
    }
};

#define CHECK_CUDA(x)                                                                    \
    do {                                                                                 \
        cudaError_t e_ = (x);                                                            \
        if (e_ != cudaSuccess) {                                                         \
            std::cerr << "CUDA error: " << cudaGetErrorString(e_) << " at " << #x << "\n"; \
            std::exit(1);                                                                \
        }                                                                                \
    } while (0)

std::string readText(const std::string& path) {
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

// The few metadata fields needed, read from model.engine.json without a JSON library.
struct Meta {
    int height = 640, width = 640;
    std::vector<std::string> names;
};

Meta readMeta(const std::string& enginePath) {
    Meta m;
    std::string j = readText(enginePath + ".json");
    if (j.empty()) {
        std::cerr << "warning: " << enginePath << ".json not found; assuming 640x640\n";
        return m;
    }
    std::smatch s;
    if (std::regex_search(j, s, std::regex("\"img_size\"\\s*:\\s*\\[\\s*(\\d+)\\s*,\\s*(\\d+)"))) {
        m.height = std::stoi(s[1]);
        m.width = std::stoi(s[2]);
    }
    if (std::regex_search(j, s, std::regex("\"names\"\\s*:\\s*\\[([^\\]]*)\\]"))) {
        std::string list = s[1];
        std::regex item("\"([^\"]*)\"");
        for (auto it = std::sregex_iterator(list.begin(), list.end(), item); it != std::sregex_iterator(); ++it)
            m.names.push_back((*it)[1]);
    }
    return m;
}

struct Letterbox {
    cv::Mat image;  // HxWx3 uint8 BGR, padded to the network size
    float ratio;
    float padW, padH;
};

// Same arithmetic as fyexport.preprocess.letterbox(auto=False).
Letterbox letterbox(const cv::Mat& img, int H, int W) {
    float r = std::min(static_cast<float>(H) / img.rows, static_cast<float>(W) / img.cols);
    int nw = static_cast<int>(std::nearbyint(img.cols * r)), nh = static_cast<int>(std::nearbyint(img.rows * r));
    float dw = (W - nw) / 2.0f, dh = (H - nh) / 2.0f;
    cv::Mat resized;
    if (nw != img.cols || nh != img.rows)
        cv::resize(img, resized, cv::Size(nw, nh), 0, 0, cv::INTER_LINEAR);
    else
        resized = img;
    int top = static_cast<int>(std::nearbyint(dh - 0.1f)), bottom = static_cast<int>(std::nearbyint(dh + 0.1f));
    int left = static_cast<int>(std::nearbyint(dw - 0.1f)), right = static_cast<int>(std::nearbyint(dw + 0.1f));
    Letterbox lb;
    cv::copyMakeBorder(resized, lb.image, top, bottom, left, right, cv::BORDER_CONSTANT, cv::Scalar(114, 114, 114));
    lb.ratio = r;
    lb.padW = dw;
    lb.padH = dh;
    return lb;
}

std::vector<float> toTensor(const cv::Mat& bgr) {  // -> 1x3xHxW RGB float 0..1
    const int H = bgr.rows, W = bgr.cols;
    std::vector<float> out(3 * H * W);
    for (int y = 0; y < H; ++y) {
        const cv::Vec3b* row = bgr.ptr<cv::Vec3b>(y);
        for (int x = 0; x < W; ++x)
            for (int c = 0; c < 3; ++c) out[c * H * W + y * W + x] = row[x][2 - c] / 255.0f;
    }
    return out;
}

struct Det {
    float x1, y1, x2, y2, score;
    int cls;
};

float iou(const Det& a, const Det& b) {
    float iw = std::max(0.0f, std::min(a.x2, b.x2) - std::max(a.x1, b.x1));
    float ih = std::max(0.0f, std::min(a.y2, b.y2) - std::max(a.y1, b.y1));
    float inter = iw * ih;
    float uni = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter;
    return uni > 0 ? inter / uni : 0.0f;
}

// fyexport's NMS: score = obj * cls, best class per row, class-aware greedy suppression.
std::vector<Det> nms(const float* pred, int n, int no, float conf, float iouThr, int maxDet = 300) {
    std::vector<Det> cand;
    for (int i = 0; i < n; ++i) {
        const float* p = pred + static_cast<size_t>(i) * no;
        if (p[4] <= conf) continue;
        int best = 0;
        float bs = 0;
        for (int c = 5; c < no; ++c)
            if (p[c] * p[4] > bs) { bs = p[c] * p[4]; best = c - 5; }
        if (no == 6) bs = p[4];
        if (bs <= conf) continue;
        cand.push_back({p[0] - p[2] / 2, p[1] - p[3] / 2, p[0] + p[2] / 2, p[1] + p[3] / 2, bs, best});
    }
    std::sort(cand.begin(), cand.end(), [](const Det& a, const Det& b) { return a.score > b.score; });
    std::vector<Det> keep;
    std::vector<bool> gone(cand.size(), false);
    for (size_t i = 0; i < cand.size() && static_cast<int>(keep.size()) < maxDet; ++i) {
        if (gone[i]) continue;
        keep.push_back(cand[i]);
        for (size_t j = i + 1; j < cand.size(); ++j)
            if (!gone[j] && cand[j].cls == cand[i].cls && iou(cand[i], cand[j]) > iouThr) gone[j] = true;
    }
    return keep;
}

size_t volume(const nvinfer1::Dims& d) {
    size_t v = 1;
    for (int i = 0; i < d.nbDims; ++i) v *= static_cast<size_t>(std::max<int64_t>(d.d[i], 1));
    return v;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 3) {
        std::cerr << "usage: " << argv[0] << " model.engine image.jpg [out.jpg] [conf] [iou]\n";
        return 2;
    }
    const std::string enginePath = argv[1], imagePath = argv[2];
    const std::string outPath = argc > 3 ? argv[3] : "";
    const float conf = argc > 4 ? std::stof(argv[4]) : 0.25f, iouThr = argc > 5 ? std::stof(argv[5]) : 0.45f;

    Meta meta = readMeta(enginePath);
    std::ifstream f(enginePath, std::ios::binary);
    std::vector<char> plan((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (plan.empty()) {
        std::cerr << "error: cannot read " << enginePath << "\n";
        return 2;
    }
    Logger logger;
    std::unique_ptr<nvinfer1::IRuntime> runtime(nvinfer1::createInferRuntime(logger));
    std::unique_ptr<nvinfer1::ICudaEngine> engine(runtime->deserializeCudaEngine(plan.data(), plan.size()));
    if (!engine) {
        std::cerr << "error: " << enginePath << " does not load here (built by another TensorRT or for another GPU?); "
                  << "rebuild it on this machine with the build_command in " << enginePath << ".json\n";
        return 1;
    }
    std::unique_ptr<nvinfer1::IExecutionContext> ctx(engine->createExecutionContext());

    cv::Mat img = cv::imread(imagePath, cv::IMREAD_COLOR);
    if (img.empty()) {
        std::cerr << "error: cannot read image " << imagePath << "\n";
        return 2;
    }
    Letterbox lb = letterbox(img, meta.height, meta.width);
    std::vector<float> input = toTensor(lb.image);

    cudaStream_t stream;
    CHECK_CUDA(cudaStreamCreate(&stream));
    std::map<std::string, void*> device;
    std::map<std::string, std::vector<char>> host;
    std::string inputName;
    for (int i = 0; i < engine->getNbIOTensors(); ++i) {
        const char* name = engine->getIOTensorName(i);
        if (engine->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT) inputName = name;
    }
    ctx->setInputShape(inputName.c_str(), nvinfer1::Dims4{1, 3, meta.height, meta.width});
    for (int i = 0; i < engine->getNbIOTensors(); ++i) {
        const char* name = engine->getIOTensorName(i);
        nvinfer1::Dims shape = ctx->getTensorShape(name);
        size_t bytes = volume(shape) * 4;  // float32 and int32 outputs
        void* ptr = nullptr;
        CHECK_CUDA(cudaMalloc(&ptr, bytes));
        device[name] = ptr;
        host[name].resize(bytes);
        ctx->setTensorAddress(name, ptr);
    }
    CHECK_CUDA(cudaMemcpyAsync(device[inputName], input.data(), input.size() * sizeof(float), cudaMemcpyHostToDevice,
                               stream));
    if (!ctx->enqueueV3(stream)) {
        std::cerr << "error: inference failed\n";
        return 1;
    }
    for (auto& kv : host)
        if (kv.first != inputName)
            CHECK_CUDA(cudaMemcpyAsync(kv.second.data(), device[kv.first], kv.second.size(), cudaMemcpyDeviceToHost,
                                       stream));
    CHECK_CUDA(cudaStreamSynchronize(stream));

    std::vector<Det> dets;
    if (host.count("num_dets")) {  // NMS inside the graph
        int n = reinterpret_cast<int*>(host["num_dets"].data())[0];
        const float* b = reinterpret_cast<float*>(host["det_boxes"].data());
        const float* s = reinterpret_cast<float*>(host["det_scores"].data());
        const int* c = reinterpret_cast<int*>(host["det_classes"].data());
        for (int i = 0; i < n; ++i) dets.push_back({b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3], s[i], c[i]});
    } else {
        nvinfer1::Dims od = ctx->getTensorShape("output");
        int n = static_cast<int>(od.d[1]), no = static_cast<int>(od.d[2]);
        dets = nms(reinterpret_cast<float*>(host["output"].data()), n, no, conf, iouThr);
    }
    for (auto& d : dets) {  // undo the letterbox
        d.x1 = std::clamp((d.x1 - lb.padW) / lb.ratio, 0.0f, static_cast<float>(img.cols));
        d.x2 = std::clamp((d.x2 - lb.padW) / lb.ratio, 0.0f, static_cast<float>(img.cols));
        d.y1 = std::clamp((d.y1 - lb.padH) / lb.ratio, 0.0f, static_cast<float>(img.rows));
        d.y2 = std::clamp((d.y2 - lb.padH) / lb.ratio, 0.0f, static_cast<float>(img.rows));
        std::string name = d.cls < static_cast<int>(meta.names.size()) ? meta.names[d.cls] : std::to_string(d.cls);
        std::cout << name << " " << d.score << " " << d.x1 << " " << d.y1 << " " << d.x2 << " " << d.y2 << "\n";
        if (!outPath.empty()) {
            cv::rectangle(img, cv::Point(int(d.x1), int(d.y1)), cv::Point(int(d.x2), int(d.y2)), cv::Scalar(0, 255, 0), 2);
            cv::putText(img, name, cv::Point(int(d.x1), int(d.y1) - 4), cv::FONT_HERSHEY_SIMPLEX, 0.5,
                        cv::Scalar(0, 255, 0), 1);
        }
    }
    if (!outPath.empty()) cv::imwrite(outPath, img);
    for (auto& kv : device) cudaFree(kv.second);
    cudaStreamDestroy(stream);
    return 0;
}
