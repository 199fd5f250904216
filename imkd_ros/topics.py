"""The ROS names the node, the bag converter and the tools share: node, frames, topics, types.

One table, so a converted bag replays straight into the node and every default topic of the
node (imkd_ros.params), the launch file's remap arguments and the converter's topic plan agree.

    key                  topic                                                type
    <CAM>                /sensors/camera/<cam>/image_rect_color/compressed    sensor_msgs/CompressedImage
    <CAM>/camera_info    /sensors/camera/<cam>/camera_info                    sensor_msgs/CameraInfo
    <RADAR>              /sensors/radar/<radar>/points                        sensor_msgs/PointCloud2
    LIDAR_TOP            /sensors/lidar/lidar_top/points                      sensor_msgs/PointCloud2
    tf, tf_static        /tf, /tf_static                                      tf2_msgs/TFMessage
    odom                 /odom                                                nav_msgs/Odometry
    gt_detections        /ground_truth/detections                             vision_msgs/Detection3DArray
    gt_markers           /ground_truth/markers                                visualization_msgs/MarkerArray

(<cam>, <radar>: the nuScenes channel name lowercased; other rigs name their topics and frames in
their rig file, imkd_core.rig, and `channel_topics` / `channel_frame` read them.) Image topics follow image_transport:
`<ns>/image_rect_color/compressed` next to `<ns>/camera_info` (nuScenes images are already
undistorted, hence "rect"). Frames follow REP-105: map -> odom -> base_link -> <channel>.
Pure Python: no rclpy, so the converter and the launch file import it anywhere.
"""

from __future__ import annotations

from imkd_core.frame import CAMERAS, LIDAR, RADARS
from imkd_core.rig import Rig

NODE_NAME = "imkd_detector"

# ---- frames (REP-105; camera frames are optical frames: z forward, x right, y down)
MAP_FRAME = "map"
ODOM_FRAME = "odom"
BASE_FRAME = "base_link"


def sensor_frame(channel: str) -> str:
    """Frame id of a nuScenes channel: the channel name lowercased (camera frames are optical)."""
    return channel.lower()


# ---- input topics
def image_topic(channel: str) -> str:
    """CompressedImage topic of a camera channel (image_transport layout)."""
    return f"/sensors/camera/{channel.lower()}/image_rect_color/compressed"


def camera_info_topic(channel: str) -> str:
    """CameraInfo topic of a camera channel."""
    return f"/sensors/camera/{channel.lower()}/camera_info"


def points_topic(channel: str) -> str:
    """PointCloud2 topic of a radar or LiDAR channel."""
    kind = "radar" if channel.upper().startswith("RADAR") else "lidar"
    return f"/sensors/{kind}/{channel.lower()}/points"


def channel_topics(channel: str, rig: Rig | None = None) -> tuple[str, str]:
    """(data topic, CameraInfo topic or "") of a channel: the rig file's where the rig names the
    channel (its cameras, radars and LiDAR), else the layout above (nuScenes' rig agrees with it)."""
    if rig is not None:
        if channel in rig.camera_names:
            cam = rig.camera(channel)
            return cam.topic, cam.info_topic
        if channel in rig.radar_names:
            return rig.radar(channel).topic, ""
        if channel == rig.lidar.name:
            return rig.lidar.topic, ""
    if channel.upper().startswith("CAM"):
        return image_topic(channel), camera_info_topic(channel)
    return points_topic(channel), ""


def channel_frame(channel: str, rig: Rig | None = None) -> str:
    """Frame id of a channel: the rig file's where it names the channel, else sensor_frame()."""
    if rig is not None:
        if channel in rig.camera_names:
            return rig.camera(channel).frame
        if channel in rig.radar_names:
            return rig.radar(channel).frame
        if channel == rig.lidar.name:
            return rig.lidar.frame
    return sensor_frame(channel)


# The topic table. Keys: channel name (data), "<CAM>/camera_info", and the logical names.
TOPICS: dict[str, str] = {
    **{cam: image_topic(cam) for cam in CAMERAS},
    **{f"{cam}/camera_info": camera_info_topic(cam) for cam in CAMERAS},
    **{radar: points_topic(radar) for radar in RADARS},
    LIDAR: points_topic(LIDAR),
    "tf": "/tf",
    "tf_static": "/tf_static",
    "odom": "/odom",
    "gt_detections": "/ground_truth/detections",
    "gt_markers": "/ground_truth/markers",
}

# The node's default inputs, in imkd_core.frame's camera and radar order.
IMAGE_TOPICS: tuple[str, ...] = tuple(TOPICS[c] for c in CAMERAS)
CAMERA_INFO_TOPICS: tuple[str, ...] = tuple(TOPICS[f"{c}/camera_info"] for c in CAMERAS)
RADAR_TOPICS: tuple[str, ...] = tuple(TOPICS[r] for r in RADARS)



def input_topics(rig: Rig | None = None) -> dict[str, str]:
    """{key: topic} of the node's inputs (cameras, "<CAM>/camera_info", radars, tf, tf_static) in
    the rig's order: the table above for nuScenes (rig None), else the rig file's topics."""
    if rig is None:
        return {k: TOPICS[k] for k in [*CAMERAS, *(f"{c}/camera_info" for c in CAMERAS), *RADARS, "tf", "tf_static"]}
    return {**{c.name: c.topic for c in rig.cameras}, **{f"{c.name}/camera_info": c.info_topic for c in rig.cameras},
            **{r.name: r.topic for r in rig.radars}, "tf": TOPICS["tf"], "tf_static": TOPICS["tf_static"]}


# ---- the node's outputs (~/ = below the node's name, remappable)
DETECTIONS_TOPIC = "~/detections"
ATTRIBUTES_TOPIC = "~/detection_attributes"
MARKERS_TOPIC = "~/markers"
TIMING_TOPIC = "~/timing"
DIAGNOSTICS_TOPIC = "/diagnostics"

# ---- message types (rosbag2 / rosidl names)
IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
POINTS_TYPE = "sensor_msgs/msg/PointCloud2"
TF_TYPE = "tf2_msgs/msg/TFMessage"
ODOM_TYPE = "nav_msgs/msg/Odometry"
DETECTIONS_TYPE = "vision_msgs/msg/Detection3DArray"
MARKERS_TYPE = "visualization_msgs/msg/MarkerArray"

TOPIC_TYPES: dict[str, str] = {
    **{cam: IMAGE_TYPE for cam in CAMERAS},
    **{f"{cam}/camera_info": CAMERA_INFO_TYPE for cam in CAMERAS},
    **{radar: POINTS_TYPE for radar in RADARS},
    LIDAR: POINTS_TYPE,
    "tf": TF_TYPE,
    "tf_static": TF_TYPE,
    "odom": ODOM_TYPE,
    "gt_detections": DETECTIONS_TYPE,
    "gt_markers": MARKERS_TYPE,
}
