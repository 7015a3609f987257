#!/usr/bin/env python3
"""Reads a Gantry recording (an MCAP segment) as Foxglove does: Python's `mcap`
reader with `mcap-protobuf-support` decoding every message from the schemas
embedded in the file, nothing else. Checks what a viewer and a data team need
(images decode as JPEG, model inputs have their stated sizes, the arm's
transforms chain from `base` to `tool`) and prints, as JSON, the messages per
topic and a few decoded values.

    $(scripts/lake-python.sh) scripts/check-recording.py SEGMENT.mcap

Exit 0 when every message decoded and every check held.
"""

import collections
import json
import math
import sys

from mcap.reader import make_reader
from mcap_protobuf.decoder import DecoderFactory


def main(path):
    counts = collections.Counter()
    problems = []
    first = {}
    samples = []
    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for schema, channel, message, decoded in reader.iter_decoded_messages():
            topic = channel.topic
            counts[topic] += 1
            if schema.encoding != "protobuf" or channel.message_encoding != "protobuf":
                problems.append(f"{topic}: not protobuf")
            if topic == "/camera/image":
                if bytes(decoded.data[:3]) != b"\xff\xd8\xff" or decoded.format != "jpeg":
                    problems.append(f"{topic}: not a JPEG at {message.log_time}")
                stamp = decoded.timestamp.seconds * 10**9 + decoded.timestamp.nanos
                if stamp != message.log_time:
                    problems.append(f"{topic}: timestamp {stamp} is not the log time {message.log_time}")
            elif topic in ("/model_input/rgb", "/model_input/depth"):
                per_pixel = {"rgb8": 3, "16UC1": 2}[decoded.encoding]
                if len(decoded.data) != decoded.width * decoded.height * per_pixel:
                    problems.append(f"{topic}: {len(decoded.data)} bytes for {decoded.width}x{decoded.height}")
                first.setdefault(topic, {"width": decoded.width, "height": decoded.height, "encoding": decoded.encoding})
            elif topic in ("/tf", "/tf_static"):
                chain = [(t.parent_frame_id, t.child_frame_id) for t in decoded.transforms]
                for t in decoded.transforms:
                    q = t.rotation
                    if not math.isclose(q.x * q.x + q.y * q.y + q.z * q.z + q.w * q.w, 1.0, rel_tol=1e-9):
                        problems.append(f"{topic}: rotation not a unit quaternion")
                if topic == "/tf" and (chain[0][0] != "base" or chain[-1][1] != "tool"):
                    problems.append(f"/tf: {chain}")
                first.setdefault(topic, chain)
            elif topic == "/samples":
                samples.append(
                    {
                        "frame_seq": decoded.frame_seq,
                        "boot_id": decoded.boot_id,
                        "task_id": decoded.task_id if decoded.HasField("task_id") else None,
                        "reason": decoded.reason,
                        "has_command": decoded.has_command,
                        "joints": len(decoded.joint_positions_rad),
                        "log_time": message.log_time,
                    }
                )
            elif topic == "/camera/calibration":
                first.setdefault(topic, {"width": decoded.width, "K": list(decoded.K)})
            elif topic == "/arm":
                first.setdefault(topic, {"joints": decoded.joints, "dh_d_m": list(decoded.dh_d_m)})
            elif topic == "/control":
                first.setdefault(topic, {"mode": decoded.mode, "goal_rad": len(decoded.goal_rad)})
    print(json.dumps({"counts": counts, "first": first, "samples": samples, "problems": problems}, indent=1))
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
