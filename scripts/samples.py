#!/usr/bin/env python3
"""A minimal training set from a Gantry lake: each training sample as numpy
arrays (image, depth, joints, action, outcome), read with DuckDB.

    $(scripts/lake-python.sh) scripts/samples.py LAKE_DIR      # prints a summary

    from samples import samples
    for image, depth, joints, action, outcome in samples("/tmp/lake"):
        ...

- image: uint8 [H, W, 3], the RGB the model saw (its resolution, before normalisation)
- depth: float32 [H, W] in millimetres (0: no reading), or None without a depth camera
- joints: float32 [2 * J], positions (rad) then velocities (rad/s), as the model took them
- action: float32 [J + 1], the policy's joint goal (rad) and gripper (0..1)
- outcome: the task's outcome, True or False; None for a frame outside a task

Samples are joined to their pixels by the image ids they carry, and to their task on
(robot_id, boot_id, task_id): a boot restarts frame numbers, so frame_seq alone would
mix two boots' frames.
Rows flagged `no_command` or `malformed_messages` are left out.
"""

import sys

import duckdb
import numpy as np

QUERY = """
SELECT s.frame_seq, rgb.width, rgb.height, rgb.data AS rgb, d.width AS dw, d.height AS dh, d.data AS depth,
       s.depth_unit_mm, s.joint_positions_rad, s.joint_velocities_rad_s, s.goal_rad, s.goal_gripper,
       t.success
FROM read_parquet('{lake}/samples/*/*/*.parquet', hive_partitioning = true) s
JOIN read_parquet('{lake}/images/*/*/*.parquet', hive_partitioning = true) rgb
  ON rgb.image_id = s.rgb_image_id
LEFT JOIN read_parquet('{lake}/images/*/*/*.parquet', hive_partitioning = true) d
  ON d.image_id = s.depth_image_id
LEFT JOIN read_parquet('{lake}/tasks/*/*/*.parquet', hive_partitioning = true) t
  ON t.robot_id = s.robot_id AND t.boot_id = s.boot_id AND t.task_id = s.task_id
WHERE NOT list_has_any(s.flags, ['no_command', 'malformed_messages'])
ORDER BY s.robot_id, s.time
"""


def samples(lake):
    for row in duckdb.sql(QUERY.format(lake=lake)).fetchall():
        (_, w, h, rgb, dw, dh, depth, unit_mm, pos, vel, goal, gripper, success) = row
        image = np.frombuffer(rgb, dtype=np.uint8).reshape(h, w, 3)
        depth_mm = None
        if depth is not None:
            depth_mm = np.frombuffer(depth, dtype="<u2").reshape(dh, dw).astype(np.float32) * np.float32(unit_mm)
        joints = np.asarray(list(pos) + list(vel), dtype=np.float32)
        action = np.asarray(list(goal) + [gripper], dtype=np.float32)
        yield image, depth_mm, joints, action, success


def main(lake):
    n, with_outcome, shapes = 0, 0, set()
    for image, depth, joints, action, outcome in samples(lake):
        n += 1
        with_outcome += outcome is not None
        shapes.add((image.shape, None if depth is None else depth.shape, joints.shape, action.shape))
    print(f"{n} samples, {with_outcome} with a task outcome, shapes {sorted(shapes)}")
    return 0 if n else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
