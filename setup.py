"""Metadata lives in setup.cfg.  This file only adds the optional C accelerator for
calibration histograms: if it cannot be compiled, fyexport installs anyway and counts
with numpy (same results, slower)."""
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    def run(self):
        try:
            super().run()
        except Exception as e:  # noqa: BLE001
            print(f"warning: optional histogram accelerator not built ({e}); calibration will use numpy")

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as e:  # noqa: BLE001
            print(f"warning: optional histogram accelerator not built ({e}); calibration will use numpy")


setup(
    ext_modules=[Extension("fyexport.quantize._fasthist", ["fyexport/quantize/_fasthist.c"],
                           extra_compile_args=["-O3"], optional=True)],
    cmdclass={"build_ext": OptionalBuildExt},
)
