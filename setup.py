"""Build of the compiled reader fast path; the rest of the project is in pyproject.toml.

`sentinelle.sources._balp` needs simdjson's headers and library (Debian: libsimdjson-dev,
which `make` installs). It is optional: without it the package installs and works, reading
through the pure Python path, only slower (`sentinelle inspect` and `bench/read.py` say
which path ran).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sentinelle.sources._balp",
            ["sentinelle/sources/_balp.cpp"],
            libraries=["simdjson"],
            language="c++",
            # simdjson's On-Demand API is compiled into this module, so it takes the SIMD
            # kernels of the CPU it is built for (-march=native); without them it runs its
            # portable fallback, ~3x slower. The module is always built on the machine
            # that runs it (`pip install -e .`), never shipped as a binary.
            extra_compile_args=["-std=c++20", "-O3", "-march=native", "-Wno-unused-parameter"],
            optional=True,
        )
    ]
)
