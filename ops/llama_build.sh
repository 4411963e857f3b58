# Sourced by the install scripts: how llama-cpp-python is compiled, the same for voicebus and
# for the peers it is benchmarked against (one build, so the comparison is of the pipelines).
# A portable AVX2 build, not -march=native: llama.cpp 0.3.36's AVX-512 kernels crash (SIGSEGV
# on any prompt of two tokens or more) on AVX-512 FP16 Xeons, and a native wheel left in pip's
# cache crashes on another CPU, so none is cached. Set CMAKE_ARGS for another build (e.g.
# -DGGML_CUDA=on).
LLAMA_CMAKE_ARGS=${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON}

# llama_install PYTHON REQUIREMENT...
llama_install() {
    _py=$1
    shift
    CMAKE_ARGS=$LLAMA_CMAKE_ARGS "$_py" -m pip install -q --no-cache-dir "$@"
}
