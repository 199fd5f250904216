"""IMKD model library (ROS-free): data contract, model, distillation, data, evaluation."""
