// Calls a built fyexport parser library the way gst-nvinfer does (DeepStream 6.4-7.1,
// nvdsinfer_context_impl.cpp InferPostprocessor::postProcessHost): the parse function named in
// the config, looked up with dlsym, called once per image with the output layers of that image
// (host buffers, dims without the batch axis) and the per-class thresholds of
// [class-attrs-all]. Compiled against the real DeepStream headers by
// tests/test_deploy_deepstream.py:
//
//   harness LIB FUNC NET_W NET_H NC CONF NAME:TYPE:D0xD1:FILE...   (TYPE f32 or i32)
//
// Prints one object a line: left top width height confidence classId.
#include "nvdsinfer_custom_impl.h"

#include <dlfcn.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct Layer {
    std::string name;
    std::vector<char> data;
    NvDsInferLayerInfo info;
};

[[noreturn]] void die(const std::string& what) {
    std::fprintf(stderr, "%s\n", what.c_str());
    std::exit(2);
}

Layer readLayer(const std::string& spec) {
    std::istringstream parts(spec);
    std::string name, type, dims, path;
    if (!std::getline(parts, name, ':') || !std::getline(parts, type, ':') || !std::getline(parts, dims, ':') ||
        !std::getline(parts, path)) {
        die("bad layer " + spec);
    }
    Layer layer{name, {}, NvDsInferLayerInfo{}};
    layer.info.dataType = type == "i32" ? INT32 : FLOAT;
    std::istringstream ds(dims);
    std::string d;
    unsigned int count = 1;
    while (std::getline(ds, d, 'x')) {
        const unsigned int v = static_cast<unsigned int>(std::stoul(d));
        layer.info.inferDims.d[layer.info.inferDims.numDims++] = v;
        count *= v;
    }
    layer.info.inferDims.numElements = count;
    std::ifstream in(path, std::ios::binary);
    layer.data.resize(static_cast<std::size_t>(count) * 4);
    in.read(layer.data.data(), static_cast<std::streamsize>(layer.data.size()));
    if (!in) die("cannot read " + path);
    return layer;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 8) die("usage: see the comment at the top of this file");
    void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) die(dlerror());
    const NvDsInferParseCustomFunc parse = reinterpret_cast<NvDsInferParseCustomFunc>(dlsym(lib, argv[2]));
    if (parse == nullptr) die(std::string("no symbol ") + argv[2]);
    NvDsInferNetworkInfo net{};
    net.width = static_cast<unsigned int>(std::stoul(argv[3]));
    net.height = static_cast<unsigned int>(std::stoul(argv[4]));
    net.channels = 3;
    NvDsInferParseDetectionParams params;
    params.numClassesConfigured = static_cast<unsigned int>(std::stoul(argv[5]));
    params.perClassPreclusterThreshold.assign(params.numClassesConfigured, std::stof(argv[6]));
    params.perClassPostclusterThreshold.assign(params.numClassesConfigured, 0.0f);
    std::vector<Layer> layers;
    for (int i = 7; i < argc; ++i) layers.push_back(readLayer(argv[i]));
    std::vector<NvDsInferLayerInfo> infos;
    for (std::size_t i = 0; i < layers.size(); ++i) {
        layers[i].info.layerName = layers[i].name.c_str();
        layers[i].info.buffer = layers[i].data.data();
        layers[i].info.bindingIndex = static_cast<int>(i + 1);
        infos.push_back(layers[i].info);
    }
    std::vector<NvDsInferObjectDetectionInfo> objects;
    if (!parse(infos, net, params, objects)) die("the parse function returned false");
    for (const NvDsInferObjectDetectionInfo& o : objects) {
        std::printf("%.9g %.9g %.9g %.9g %.9g %u\n", static_cast<double>(o.left), static_cast<double>(o.top),
                    static_cast<double>(o.width), static_cast<double>(o.height),
                    static_cast<double>(o.detectionConfidence), o.classId);
    }
    dlclose(lib);
    return 0;
}
