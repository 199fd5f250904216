"""ament_python package imkd_ros: installs imkd_core (model library) and imkd_ros (ROS node)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "imkd_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["imkd_core", "imkd_core.*", "imkd_ros", "imkd_ros.*"]),
    package_data={"imkd_core": ["weights/*", "rigs/*.yaml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/launch", glob("launch/*.launch.py")),
        ("share/" + PACKAGE + "/config", glob("config/*.yaml") + glob("config/*.rviz")),
        ("share/" + PACKAGE + "/config/rigs", glob("config/rigs/*.yaml")),
    ],
    install_requires=["setuptools", "numpy<2", "pyyaml", "opencv-python-headless", "tqdm"],
    zip_safe=False,
    maintainer="IMKD-ROS maintainers",
    maintainer_email="maintainers@users.noreply.b-seed-d38b9a2e.example",
    description="IMKD camera+radar 3D detection for ROS 2 (LiDAR-distilled student)",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "imkd-detector = imkd_ros.detector_node:main",
            "detector_node = imkd_ros.detector_node:main",
            "imkd-nuscenes-to-bag = imkd_ros.nuscenes_to_bag:main",
            "nuscenes_to_bag = imkd_ros.nuscenes_to_bag:main",
            "imkd-replay = imkd_ros.replay:main",
            "replay = imkd_ros.replay:main",
            "imkd-replay-eval = imkd_ros.replay_eval:main",
            "replay_eval = imkd_ros.replay_eval:main",
        ],
    },
)
