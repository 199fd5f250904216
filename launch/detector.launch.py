"""Start the IMKD detector node with config/detector.yaml.

    ros2 launch imkd_ros detector.launch.py checkpoint:=/path/student.pt
    ros2 launch imkd_ros detector.launch.py checkpoint:=/path/student.pt device:=cuda use_sim_time:=true
    ros2 launch imkd_ros detector.launch.py checkpoint:=/path/student.pt namespace:=perception \\
        cam_front_image:=/my_car/front/image/compressed radar_front_points:=/my_car/radar_front

Arguments (an empty value leaves the params file's setting alone):
  params_file      node parameters (default: <share>/imkd_ros/config/detector.yaml)
  checkpoint       student checkpoint (.pt), required unless the params file sets one; the bundled
                   imkd_core/weights/imkd_tiny_demo.pt is synthetic-only: pass it explicitly to try
                   the pipeline
  device           auto | cpu | cuda | cuda:N
  use_sim_time     true when replaying a bag with --clock
  rig              sensor rig (nuscenes, compact4 or a rig YAML, docs/rigs.md); the node's input
                   topics then default to the rig's (remap those names, not the ones below)
  namespace        namespace of the node (its outputs become /<ns>/imkd_detector/...)
  log_level        debug | info | warn | error
  detections_topic, attributes_topic, markers_topic
                   remap the outputs ~/detections, ~/detection_attributes, ~/markers
  <camera>_image, <camera>_info, <radar>_points   remap an input (e.g. cam_front_image:=/x/compressed)
The input remaps apply to the default topic names (imkd_ros/topics.py, as in config/detector.yaml
and the nuScenes bag converter's bags); if a params file renames topics, remap those names yourself.

Where the `ros2` CLI is absent, `imkd-detector --ros-args --params-file config/detector.yaml -p checkpoint:=...`
starts the same node with the same parameters.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from imkd_core.frame import CAMERAS, RADARS
from imkd_ros.params import PARAM_SPECS, YAML_PATH
from imkd_ros.topics import (
    ATTRIBUTES_TOPIC,
    DETECTIONS_TOPIC,
    MARKERS_TOPIC,
    NODE_NAME,
    camera_info_topic,
    image_topic,
    points_topic,
)

PACKAGE = "imkd_ros"
EXECUTABLE = "detector_node"  # console script of setup.py (also installed as imkd-detector)
PARAMS_FILE = YAML_PATH.parts  # ("config", "detector.yaml"), generated from imkd_ros.params

# launch argument -> the node's default topic (imkd_ros.topics, config/detector.yaml) it remaps
INPUT_REMAPS = {
    **{f"{c.lower()}_image": image_topic(c) for c in CAMERAS},
    **{f"{c.lower()}_info": camera_info_topic(c) for c in CAMERAS},
    **{f"{r.lower()}_points": points_topic(r) for r in RADARS},
}
OUTPUT_REMAPS = {"detections_topic": DETECTIONS_TOPIC, "attributes_topic": ATTRIBUTES_TOPIC,
                 "markers_topic": MARKERS_TOPIC}
# launch argument -> node parameter it overrides (only when the argument is not empty)
PARAM_ARGS = {"checkpoint": "checkpoint", "device": "device", "use_sim_time": "use_sim_time", "rig": "rig"}


def _node(context, *args, **kwargs):
    """Build the Node once the arguments are known, so empty arguments override nothing."""
    cfg = context.launch_configurations
    overrides = {}
    for arg, param in PARAM_ARGS.items():
        value = cfg.get(arg, "").strip()
        if value:
            overrides[param] = value.lower() in ("true", "1", "yes") if param == "use_sim_time" else value
    remaps = [(topic, cfg[arg].strip()) for arg, topic in {**INPUT_REMAPS, **OUTPUT_REMAPS}.items()
              if cfg.get(arg, "").strip()]
    return [Node(
        package=PACKAGE,
        executable=EXECUTABLE,
        name=NODE_NAME,
        namespace=cfg.get("namespace", ""),
        parameters=[cfg["params_file"]] + ([overrides] if overrides else []),
        remappings=remaps,
        ros_arguments=["--log-level", cfg.get("log_level", "info")],
        output="screen",
        emulate_tty=True,
    )]


def generate_launch_description() -> LaunchDescription:
    args = [
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([FindPackageShare(PACKAGE),
                                                                                 *PARAMS_FILE]),
                              description="node parameters (YAML)"),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="student checkpoint (required unless the params file sets one)"),
        DeclareLaunchArgument("device", default_value="",
                              description=f"{PARAM_SPECS['device'].constraint}; '' = params file"),
        DeclareLaunchArgument("use_sim_time", default_value="", description="true with `ros2 bag play --clock`"),
        DeclareLaunchArgument("rig", default_value="", description="sensor rig: a shipped name (nuscenes, compact4) "
                              "or a rig YAML; its topics become the node's defaults; '' = params file"),
        DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
        DeclareLaunchArgument("log_level", default_value="info", description="debug | info | warn | error"),
    ]
    args += [DeclareLaunchArgument(a, default_value="", description=f"remap {t}")
             for a, t in {**INPUT_REMAPS, **OUTPUT_REMAPS}.items()]
    return LaunchDescription(args + [OpaqueFunction(function=_node)])
