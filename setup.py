"""Build of the one compiled part of visionkit: the C loops of NMS / Soft-NMS (``visionkit.ops._nms_native``).

All metadata lives in ``pyproject.toml``; this file only declares the extension. It is optional: where no
C compiler is available the package still installs and the pure-PyTorch engines run instead (``visionkit
info`` reports which backend is in use).
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class BuildExt(build_ext):
    """Compiler-specific flags: no floating-point contraction (FMA would change the IoU's last bits)."""

    def build_extensions(self) -> None:
        if self.compiler.compiler_type == "msvc":
            flags = ["/O2", "/fp:precise"]
        else:
            flags = ["-O2", "-ffp-contract=off"]
        for extension in self.extensions:
            extension.extra_compile_args = flags
        super().build_extensions()


setup(
    ext_modules=[
        Extension(
            "visionkit.ops._nms_native",
            sources=["src/visionkit/ops/_native/nms_module.c"],
            depends=["src/visionkit/ops/_native/nms_impl.h"],
            optional=True,
        )
    ],
    cmdclass={"build_ext": BuildExt},
)
