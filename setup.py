from setuptools import find_packages, setup

setup(
    name="sparseconv",
    version="0.1.0",
    description="Submanifold sparse convolutional networks in NumPy/Numba (no PyTorch), "
    "and the two-stage KiTS23 kidney/tumour segmenter built on them.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["sparseconv", "sparseconv.*", "kidney", "kidney.*"]),
    package_data={"kidney": ["weights/*.npz", "weights/*.json", "weights/*.md", "weights/varied/*.npz",
                              "weights/varied/*.md", "data/*.json"],
                  "sparseconv": ["backends/cuda/*.cu", "backends/cuda/*.h", "backends/cuda_emulation/*.h",
                                 "backends/cuda_emulation/*.cpp"]},
    install_requires=["numpy>=1.23", "numba>=0.57", "scipy>=1.9", "nibabel>=4.0"],
    extras_require={
        "test": ["pytest>=7", "hypothesis>=6.80", "matplotlib>=3.5", "tqdm>=4.60"],
        "gpu": ["cupy-cuda12x>=13"],
        "bench": ["matplotlib>=3.5", "tqdm>=4.60", "psutil>=5.9"],
        # kidney segment --workers / --scheduler: Dask distributed, and bokeh for its dashboard
        "cluster": ["dask[distributed]>=2024.1", "bokeh>=3.1", "tqdm>=4.60"],
        # kidney train --distributed: MPI ranks (mpi4py, and the MPICH library as a wheel)
        "mpi": ["mpi4py>=3.1", "mpich"],
    },
    entry_points={"console_scripts": ["kidney=kidney.cli:main"]},
)
