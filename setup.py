"""Build convkit's compiled modules with CMake.

setup.py only drives CMake (CMakeLists.txt holds the build): one CMake project builds every
module (`convkit._cpu`, `convkit._cudasim`, and `convkit._cuda` where nvcc is found) into the package folder.
Build options come from the environment and map to the CMake options of the same name:
CONVKIT_NATIVE (ON/OFF), CONVKIT_CUDA (AUTO/ON/OFF), CONVKIT_CUDA_ARCHS, CONVKIT_SIM (ON/OFF),
CONVKIT_BUILD_TYPE (Release), CONVKIT_BUILD_DIR (an incremental build folder, default build/).
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
CMAKE_OPTIONS = ("CONVKIT_NATIVE", "CONVKIT_CUDA", "CONVKIT_CUDA_ARCHS", "CONVKIT_SIM")


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    _built = False

    def build_extension(self, ext):
        # One CMake build makes every module; the later extensions only check their file.
        if CMakeBuild._built:
            if not Path(self.get_ext_fullpath(ext.name)).exists():
                raise RuntimeError(f"CMake did not build {ext.name}; see the configure messages above")
            return
        CMakeBuild._built = True
        out_dir = Path(self.get_ext_fullpath(ext.name)).parent.resolve()
        default_build = ROOT / "build" / f"cmake-py{sys.version_info[0]}{sys.version_info[1]}"
        build_dir = Path(os.environ.get("CONVKIT_BUILD_DIR", default_build))
        build_dir.mkdir(parents=True, exist_ok=True)
        import pybind11

        args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DCMAKE_BUILD_TYPE={os.environ.get('CONVKIT_BUILD_TYPE', 'Release')}",
        ]
        args += [f"-D{k}={os.environ[k]}" for k in CMAKE_OPTIONS if k in os.environ]
        if not (build_dir / "CMakeCache.txt").exists():
            try:
                import ninja  # noqa: F401
                args += ["-G", "Ninja"]
            except ImportError:
                pass
        # cmake and ninja may come from pip, next to this interpreter.
        env = dict(os.environ)
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        subprocess.check_call(["cmake", str(ROOT)] + args, cwd=build_dir, env=env)
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
        subprocess.check_call(["cmake", "--build", ".", "--parallel", jobs], cwd=build_dir, env=env)


def _extensions():
    """The modules CMake will build, so that setuptools installs each of them (an editable
    install copies only the declared extensions into the source tree). Mirrors CMakeLists.txt:
    _cudasim unless CONVKIT_SIM=OFF; _cuda with CONVKIT_CUDA=ON, or AUTO when nvcc is found."""
    names = ["convkit._cpu"]
    if os.environ.get("CONVKIT_SIM", "ON").upper() not in ("OFF", "0", "FALSE", "NO"):
        names.append("convkit._cudasim")
    cuda = os.environ.get("CONVKIT_CUDA", "AUTO").upper()
    if cuda == "ON" or (cuda == "AUTO" and (os.environ.get("CUDACXX") or shutil.which("nvcc"))):
        names.append("convkit._cuda")
    return [CMakeExtension(n) for n in names]


setup(ext_modules=_extensions(), cmdclass={"build_ext": CMakeBuild})
