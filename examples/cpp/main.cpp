// fyexport_detect: load a fyexport TensorRT engine and its model.engine.json, letterbox an
// image exactly as fyexport does (aspect-preserving INTER_LINEAR resize, grey 114 padding,
// RGB, /255, NCHW), run inference, apply class-aware NMS and print (or draw) detections.
//
//   fyexport_detect model.engine image.jpg [out.jpg] [conf=0.25] [iou=0.45]
//
// Uses only TensorRT calls common to 10.x and 11.x: name-based I/O (getNbIOTensors,
// getIOTensorName, getTensorShape, getTensorDataType, setInputShape, setTensorAddress) and
// enqueueV3, and checks every result.  TensorRT's plugins are registered first
// (initLibNvInferPlugins): engines exported with --nms trt-plugin contain EfficientNMS_TRT.
// Expects the decoded output "output" [B, N, 5 + nc] (export without --nms), or the four NMS
// outputs num_dets, det_boxes, det_scores, det_classes.  The input size comes from the engine.
//
// Build with CMakeLists.txt beside this file, or by hand (TRT = the TensorRT prefix):
//   g++ -std=c++17 -Wall -Wextra -Wconversion -isystem $TRT/include -isystem /usr/local/cuda/include
//       -isystem /usr/include/opencv4 -c main.cpp -o main.o
//   g++ main.o -o fyexport_detect -L$TRT/lib -lnvinfer -lnvinfer_plugin -L/usr/local/cuda/lib64 -lcudart
//       -lopencv_imgcodecs -lopencv_imgproc -lopencv_core
#include <NvInfer.h>
#include <NvInferPlugin.h>
#include <cuda_runtime_api.h>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
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

bool cudaOk(cudaError_t e, const char* what) {
    if (e == cudaSuccess) return true;
    std::cerr << "error: " << what << ": " << cudaGetErrorString(e) << "\n";
    return false;
}

// Device memory, freed on every way out of main.
class DeviceBuffer {
public:
    DeviceBuffer() = default;
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
    ~DeviceBuffer() {
        if (ptr_ != nullptr) static_cast<void>(cudaFree(ptr_));
    }
    bool allocate(size_t bytes) {
        bytes_ = bytes;
        return cudaOk(cudaMalloc(&ptr_, std::max<size_t>(bytes, 1)), "cudaMalloc");
    }
    void* get() const { return ptr_; }
    size_t bytes() const { return bytes_; }

private:
    void* ptr_ = nullptr;
    size_t bytes_ = 0;
};

// The CUDA stream, destroyed on every way out of main.
struct Stream {
    cudaStream_t handle = nullptr;
    Stream() = default;
    Stream(const Stream&) = delete;
    Stream& operator=(const Stream&) = delete;
    ~Stream() {
        if (handle != nullptr) static_cast<void>(cudaStreamDestroy(handle));
    }
};

std::string readText(const std::string& path) {
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

// The few metadata fields needed, read from model.engine.json without a JSON library.
struct Meta {
    int height = 640, width = 640;  // only used if the engine's input has no fixed H and W
    std::vector<std::string> names;
};

Meta readMeta(const std::string& enginePath) {
    Meta m;
    std::string j = readText(enginePath + ".json");
    if (j.empty()) {
        std::cerr << "warning: " << enginePath << ".json not found; classes are printed as numbers\n";
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
    double ratio = 1.0;
    double padW = 0.0, padH = 0.0;
};

// Same arithmetic as fyexport.preprocess.letterbox(auto=False), in double like Python
// (std::nearbyint rounds half to even, as Python's round does).
Letterbox letterbox(const cv::Mat& img, int H, int W) {
    const double r = std::min(static_cast<double>(H) / img.rows, static_cast<double>(W) / img.cols);
    const int nw = static_cast<int>(std::nearbyint(img.cols * r)), nh = static_cast<int>(std::nearbyint(img.rows * r));
    const double dw = (W - nw) / 2.0, dh = (H - nh) / 2.0;
    cv::Mat resized;
    if (nw != img.cols || nh != img.rows)
        cv::resize(img, resized, cv::Size(nw, nh), 0, 0, cv::INTER_LINEAR);
    else
        resized = img;
    const int top = static_cast<int>(std::nearbyint(dh - 0.1)), bottom = static_cast<int>(std::nearbyint(dh + 0.1));
    const int left = static_cast<int>(std::nearbyint(dw - 0.1)), right = static_cast<int>(std::nearbyint(dw + 0.1));
    Letterbox lb;
    cv::copyMakeBorder(resized, lb.image, top, bottom, left, right, cv::BORDER_CONSTANT, cv::Scalar(114, 114, 114));
    lb.ratio = r;
    lb.padW = dw;
    lb.padH = dh;
    return lb;
}

// BGR HxW uint8 -> the first image of a batch x 3 x H x W RGB float tensor in 0..1.
std::vector<float> toTensor(const cv::Mat& bgr, size_t batch) {
    const size_t H = static_cast<size_t>(bgr.rows), W = static_cast<size_t>(bgr.cols);
    std::vector<float> out(batch * 3 * H * W, 0.0f);
    for (size_t y = 0; y < H; ++y) {
        const cv::Vec3b* row = bgr.ptr<cv::Vec3b>(static_cast<int>(y));
        for (size_t x = 0; x < W; ++x)
            for (int c = 0; c < 3; ++c)
                out[static_cast<size_t>(c) * H * W + y * W + x] = static_cast<float>(row[x][2 - c]) / 255.0f;
    }
    return out;
}

struct Det {
    float x1, y1, x2, y2, score;
    int cls;
};

float iou(const Det& a, const Det& b) {
    const float iw = std::max(0.0f, std::min(a.x2, b.x2) - std::max(a.x1, b.x1));
    const float ih = std::max(0.0f, std::min(a.y2, b.y2) - std::max(a.y1, b.y1));
    const float inter = iw * ih;
    const float uni = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter;
    return uni > 0 ? inter / uni : 0.0f;
}

// fyexport's NMS: score = obj * cls, best class per row, class-aware greedy suppression.
std::vector<Det> nms(const float* pred, size_t n, size_t no, float conf, float iouThr, size_t maxDet = 300) {
    std::vector<Det> cand;
    for (size_t i = 0; i < n; ++i) {
        const float* p = pred + i * no;
        if (p[4] <= conf) continue;
        int best = 0;
        float bs = 0;
        for (size_t c = 5; c < no; ++c)
            if (p[c] * p[4] > bs) {
                bs = p[c] * p[4];
                best = static_cast<int>(c - 5);
            }
        if (no == 6) bs = p[4];
        if (bs <= conf) continue;
        cand.push_back({p[0] - p[2] / 2, p[1] - p[3] / 2, p[0] + p[2] / 2, p[1] + p[3] / 2, bs, best});
    }
    std::sort(cand.begin(), cand.end(), [](const Det& a, const Det& b) { return a.score > b.score; });
    std::vector<Det> keep;
    std::vector<bool> gone(cand.size(), false);
    for (size_t i = 0; i < cand.size() && keep.size() < maxDet; ++i) {
        if (gone[i]) continue;
        keep.push_back(cand[i]);
        for (size_t j = i + 1; j < cand.size(); ++j)
            if (!gone[j] && cand[j].cls == cand[i].cls && iou(cand[i], cand[j]) > iouThr) gone[j] = true;
    }
    return keep;
}

// Elements of a fully known shape; false if a dimension is still unknown (-1).
bool volumeOf(const nvinfer1::Dims& d, size_t& v) {
    v = 1;
    for (int32_t i = 0; i < d.nbDims; ++i) {
        if (d.d[i] < 0) return false;
        v *= static_cast<size_t>(d.d[i]);
    }
    return true;
}

// Bytes of `count` elements of a TensorRT data type (INT4 and FP4 pack two to a byte).
size_t tensorBytes(nvinfer1::DataType type, size_t count) {
    switch (type) {
        case nvinfer1::DataType::kFLOAT:
        case nvinfer1::DataType::kINT32: return 4 * count;
        case nvinfer1::DataType::kHALF:
        case nvinfer1::DataType::kBF16: return 2 * count;
        case nvinfer1::DataType::kINT64: return 8 * count;
        case nvinfer1::DataType::kINT4:
#if NV_TENSORRT_MAJOR > 10 || NV_TENSORRT_MINOR >= 8  // kFP4 exists from TensorRT 10.8 (not in JetPack 6's 10.3)
        case nvinfer1::DataType::kFP4:
#endif
            return (count + 1) / 2;
        default: return count;  // kINT8, kUINT8, kBOOL, kFP8 (and kE8M0 from 10.12)
    }
}

template <typename T>
std::vector<T> asVector(const std::vector<char>& bytes) {
    std::vector<T> v(bytes.size() / sizeof(T));
    std::memcpy(v.data(), bytes.data(), v.size() * sizeof(T));
    return v;
}

std::string shapeText(const nvinfer1::Dims& d) {
    std::string s = "[";
    for (int32_t i = 0; i < d.nbDims; ++i) s += (i ? ", " : "") + std::to_string(d.d[i]);
    return s + "]";
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

    const Meta meta = readMeta(enginePath);
    std::ifstream f(enginePath, std::ios::binary);
    std::vector<char> plan((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (plan.empty()) {
        std::cerr << "error: cannot read " << enginePath << "\n";
        return 2;
    }
    cv::Mat img = cv::imread(imagePath, cv::IMREAD_COLOR);
    if (img.empty()) {
        std::cerr << "error: cannot read image " << imagePath << "\n";
        return 2;
    }
    Logger logger;
    if (!initLibNvInferPlugins(&logger, ""))  // EfficientNMS_TRT (--nms trt-plugin) lives in the plugin library
        std::cerr << "warning: TensorRT's plugin library did not initialise; engines with plugins will not load\n";
    std::unique_ptr<nvinfer1::IRuntime> runtime(nvinfer1::createInferRuntime(logger));
    if (!runtime) {
        std::cerr << "error: cannot create the TensorRT runtime\n";
        return 1;
    }
    std::unique_ptr<nvinfer1::ICudaEngine> engine(runtime->deserializeCudaEngine(plan.data(), plan.size()));
    if (!engine) {
        std::cerr << "error: " << enginePath << " does not load here (TensorRT's message above says why: an engine "
                  << "from another TensorRT version or GPU, or one whose plugin is missing); rebuild it on this "
                  << "machine with the build_command in " << enginePath << ".json\n";
        return 1;
    }
    std::unique_ptr<nvinfer1::IExecutionContext> ctx(engine->createExecutionContext());
    if (!ctx) {
        std::cerr << "error: cannot create an execution context (out of GPU memory?)\n";
        return 1;
    }

    std::string inputName;
    int inputs = 0;
    for (int32_t i = 0; i < engine->getNbIOTensors(); ++i) {
        const char* name = engine->getIOTensorName(i);
        if (engine->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT) {
            inputName = name;
            ++inputs;
        }
    }
    const nvinfer1::Dims inDims = engine->getTensorShape(inputName.c_str());
    if (inputs != 1 || inDims.nbDims != 4 || engine->getTensorDataType(inputName.c_str()) != nvinfer1::DataType::kFLOAT) {
        std::cerr << "error: expected one float32 NCHW image input, found " << inputs << " input(s)\n";
        return 1;
    }
    const int64_t batch = inDims.d[0] > 0 ? inDims.d[0] : 1;  // a static batch is filled with one image
    const int H = inDims.d[2] > 0 ? static_cast<int>(inDims.d[2]) : meta.height;
    const int W = inDims.d[3] > 0 ? static_cast<int>(inDims.d[3]) : meta.width;
    const nvinfer1::Dims4 inShape{batch, 3, H, W};
    if (!ctx->setInputShape(inputName.c_str(), inShape)) {
        std::cerr << "error: the engine refuses input shape " << shapeText(inShape) << " (outside its optimization "
                  << "profile? rebuild it with --min-batch 1)\n";
        return 1;
    }
    const Letterbox lb = letterbox(img, H, W);
    const std::vector<float> input = toTensor(lb.image, static_cast<size_t>(batch));

    Stream stream;  // declared before the buffers: they are freed first
    std::map<std::string, DeviceBuffer> device;
    std::map<std::string, std::vector<char>> host;
    for (int32_t i = 0; i < engine->getNbIOTensors(); ++i) {
        const char* name = engine->getIOTensorName(i);
        size_t count = 0;
        if (!volumeOf(ctx->getTensorShape(name), count)) {
            std::cerr << "error: tensor " << name << " has no known shape " << shapeText(ctx->getTensorShape(name))
                      << "\n";
            return 1;
        }
        const size_t bytes = tensorBytes(engine->getTensorDataType(name), count);
        if (!device[name].allocate(bytes)) return 1;
        host[name].resize(bytes);
        if (!ctx->setTensorAddress(name, device[name].get())) {
            std::cerr << "error: TensorRT refused the address of tensor " << name << "\n";
            return 1;
        }
    }
    if (device[inputName].bytes() != input.size() * sizeof(float)) {
        std::cerr << "error: input buffer size mismatch\n";
        return 1;
    }
    if (!cudaOk(cudaStreamCreate(&stream.handle), "cudaStreamCreate")) return 1;
    if (!cudaOk(cudaMemcpyAsync(device[inputName].get(), input.data(), device[inputName].bytes(),
                                cudaMemcpyHostToDevice, stream.handle), "copy to the GPU"))
        return 1;
    if (!ctx->enqueueV3(stream.handle)) {
        std::cerr << "error: TensorRT could not enqueue the inference\n";
        return 1;
    }
    for (auto& kv : host)
        if (kv.first != inputName &&
            !cudaOk(cudaMemcpyAsync(kv.second.data(), device[kv.first].get(), kv.second.size(), cudaMemcpyDeviceToHost,
                                    stream.handle), "copy from the GPU"))
            return 1;
    if (!cudaOk(cudaStreamSynchronize(stream.handle), "inference")) return 1;

    std::vector<Det> dets;
    const bool nmsOutputs = host.count("num_dets") && host.count("det_boxes") && host.count("det_scores") &&
                            host.count("det_classes");
    if (nmsOutputs) {  // NMS inside the graph: [B,1] int32, [B,K,4] and [B,K] float32, [B,K] int32
        if (engine->getTensorDataType("num_dets") != nvinfer1::DataType::kINT32 ||
            engine->getTensorDataType("det_classes") != nvinfer1::DataType::kINT32 ||
            engine->getTensorDataType("det_boxes") != nvinfer1::DataType::kFLOAT ||
            engine->getTensorDataType("det_scores") != nvinfer1::DataType::kFLOAT) {
            std::cerr << "error: unexpected data types of the NMS outputs\n";
            return 1;
        }
        const std::vector<int32_t> num = asVector<int32_t>(host["num_dets"]), cls = asVector<int32_t>(host["det_classes"]);
        const std::vector<float> b = asVector<float>(host["det_boxes"]), s = asVector<float>(host["det_scores"]);
        const size_t k = static_cast<size_t>(ctx->getTensorShape("det_boxes").d[1]);
        const size_t n = std::min(static_cast<size_t>(std::max(num.at(0), 0)), k);
        for (size_t i = 0; i < n; ++i) dets.push_back({b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3], s[i], cls[i]});
    } else if (host.count("output") && engine->getTensorDataType("output") == nvinfer1::DataType::kFLOAT) {
        const nvinfer1::Dims od = ctx->getTensorShape("output");
        const std::vector<float> pred = asVector<float>(host["output"]);
        dets = nms(pred.data(), static_cast<size_t>(od.d[1]), static_cast<size_t>(od.d[2]), conf, iouThr);
    } else {
        std::cerr << "error: expected a float32 'output' or the four NMS outputs\n";
        return 1;
    }
    const float cols = static_cast<float>(img.cols), rows = static_cast<float>(img.rows);
    const float padW = static_cast<float>(lb.padW), padH = static_cast<float>(lb.padH);
    const float ratio = static_cast<float>(lb.ratio);
    for (auto& d : dets) {  // undo the letterbox
        d.x1 = std::clamp((d.x1 - padW) / ratio, 0.0f, cols);
        d.x2 = std::clamp((d.x2 - padW) / ratio, 0.0f, cols);
        d.y1 = std::clamp((d.y1 - padH) / ratio, 0.0f, rows);
        d.y2 = std::clamp((d.y2 - padH) / ratio, 0.0f, rows);
        const bool named = d.cls >= 0 && static_cast<size_t>(d.cls) < meta.names.size();
        const std::string name = named ? meta.names[static_cast<size_t>(d.cls)] : std::to_string(d.cls);
        std::cout << name << " " << d.score << " " << d.x1 << " " << d.y1 << " " << d.x2 << " " << d.y2 << "\n";
        if (!outPath.empty()) {
            const cv::Point p1(static_cast<int>(d.x1), static_cast<int>(d.y1));
            const cv::Point p2(static_cast<int>(d.x2), static_cast<int>(d.y2));
            cv::rectangle(img, p1, p2, cv::Scalar(0, 255, 0), 2);
            cv::putText(img, name, cv::Point(p1.x, p1.y - 4), cv::FONT_HERSHEY_SIMPLEX, 0.5, cv::Scalar(0, 255, 0), 1);
        }
    }
    if (!outPath.empty() && !cv::imwrite(outPath, img)) {
        std::cerr << "error: cannot write " << outPath << "\n";
        return 1;
    }
    return 0;
}
