from setuptools import find_packages, setup

setup(
    name="downstream-tx",
    version="0.1.0",
    description="A proof-of-storage verification node (Twisted), compatible with downstream-farmer",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["downstream_tx", "downstream_tx.*"]) + ["twisted.plugins"],
    package_data={"downstream_tx.db": ["schema/*.sql"], "twisted.plugins": ["downstream_plugin.py"]},
    include_package_data=True,
    install_requires=[
        "Twisted[tls]>=24.3,<27",
        "klein>=24.8,<26",
        "treq>=24.9,<27",
        "PyMySQL>=1.1,<2",
        "cryptography>=42,<52",
        "coincurve>=20,<22",
        "base58>=2.1,<3",
        "orjson>=3.9,<4",
        "prometheus-client>=0.20,<1",
        "ijson>=3.2,<4",
    ],
    extras_require={
        "test": [
            "pytest>=8,<10",
            "pytest-twisted>=1.14,<2",
            "hypothesis>=6.100,<7",
            "schemathesis>=4,<5",
            "PyYAML>=6,<7",
            "ruff>=0.5",
        ],
    },
    entry_points={"console_scripts": ["downstream-admin = downstream_tx.admin:entry"]},
    classifiers=["Framework :: Twisted", "Programming Language :: Python :: 3.11"],
)
