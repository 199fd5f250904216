"""ROS 2 side of IMKD: message conversions, TF buffer, sync, detector node, bag tools."""
