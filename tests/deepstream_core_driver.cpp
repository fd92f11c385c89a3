// Runs the DeepStream parser core (fyexport/deploy/deepstream_parser/fyexport_parse_core.h) on
// raw tensors of one image, for tests/test_deploy_deepstream.py:
//
//   driver decoded    ROWS.f32 N NC CONF IOU MAX_DET    decode + fyexport's NMS
//   driver candidates ROWS.f32 N NC CONF                decode only
//   driver nms NUM.i32 BOXES.f32 SCORES.f32 CLASSES.i32 TOPK NC CONF
//
// Prints one detection a line: x1 y1 x2 y2 score class.
#include "fyexport_parse_core.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace {

template <typename T>
std::vector<T> readRaw(const char* path, std::size_t count) {
    std::ifstream in(path, std::ios::binary);
    std::vector<T> data(count);
    in.read(reinterpret_cast<char*>(data.data()), static_cast<std::streamsize>(count * sizeof(T)));
    if (!in) {
        std::fprintf(stderr, "cannot read %zu values from %s\n", count, path);
        std::exit(2);
    }
    return data;
}

std::size_t size(const char* s) { return static_cast<std::size_t>(std::stoul(s)); }

void print(const std::vector<fyexport::Detection>& dets) {
    for (const fyexport::Detection& d : dets) {
        std::printf("%.9g %.9g %.9g %.9g %.9g %d\n", static_cast<double>(d.x1), static_cast<double>(d.y1),
                    static_cast<double>(d.x2), static_cast<double>(d.y2), static_cast<double>(d.score), d.cls);
    }
}

}  // namespace

int main(int argc, char** argv) {
    const std::string mode = argc > 1 ? argv[1] : "";
    if ((mode == "decoded" && argc == 8) || (mode == "candidates" && argc == 6)) {
        const std::size_t n = size(argv[3]), nc = size(argv[4]);
        const std::vector<float> rows = readRaw<float>(argv[2], n * (nc + 5));
        const std::vector<float> conf(nc, std::stof(argv[5]));
        std::vector<fyexport::Detection> cand = fyexport::candidates(rows.data(), n, nc, conf.data());
        if (mode == "candidates") {
            print(cand);
            return 0;
        }
        fyexport::NmsParams params;
        params.iou = std::stod(argv[6]);
        params.max_det = size(argv[7]);
        print(fyexport::nms(cand, params));
        return 0;
    }
    if (mode == "nms" && argc == 9) {
        const std::size_t topk = size(argv[6]), nc = size(argv[7]);
        const std::vector<std::int32_t> num = readRaw<std::int32_t>(argv[2], 1);
        const std::vector<float> boxes = readRaw<float>(argv[3], topk * 4);
        const std::vector<float> scores = readRaw<float>(argv[4], topk);
        const std::vector<std::int32_t> classes = readRaw<std::int32_t>(argv[5], topk);
        const std::vector<float> conf(nc, std::stof(argv[8]));
        print(fyexport::from_nms_outputs(num[0], boxes.data(), scores.data(), classes.data(), topk, nc, conf.data()));
        return 0;
    }
    std::fprintf(stderr, "usage: see the comment at the top of this file\n");
    return 2;
}
