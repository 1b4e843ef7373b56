#!/usr/bin/env python3
"""Writes the seed chains' example inputs (deterministic: a fixed seed). Run from anywhere:
`python3 examples/generate.py`. The end-to-end tests read these files and compute the expected
results themselves; nothing here knows the answers."""
import json
import random
from pathlib import Path

HERE = Path(__file__).parent
T0 = 1_700_000_000_000
rng = random.Random(7)


def msg(ts, msg_type, device, data, metadata=None, entity="DEVICE"):
    return {"ts": ts, "type": msg_type, "originator": {"entityType": entity, "name": device},
            "metadata": metadata or {}, "data": data}


def write(name, lines):
    path = HERE / name / "input.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def wind():
    # Like ThingsBoard's send-randomized-windspeed samples: stations in three geo zones send
    # their wind speed as a string every 2 s for a minute; a thermometer and a zoneless station
    # are filtered out; a few events arrive late (some beyond the 2 s grace).
    stations = [(f"WS-{i}", "ABC"[i % 3]) for i in range(1, 9)]
    lines = []
    for t in range(0, 60_000, 2_000):
        for name, zone in stations:
            ts = T0 + t + rng.randrange(0, 1_000)
            lines.append(msg(ts, "POST_TELEMETRY_REQUEST", name, {"windSpeed": str(rng.randrange(5, 40))},
                             {"deviceType": "WeatherStation", "cs_geoZone": zone}))
        lines.append(msg(T0 + t, "POST_TELEMETRY_REQUEST", "T-1", {"windSpeed": "99"}, {"deviceType": "Thermometer", "cs_geoZone": "A"}))
        lines.append(msg(T0 + t, "POST_TELEMETRY_REQUEST", "WS-0", {"windSpeed": "99"}, {"deviceType": "WeatherStation"}))
    for i in range(0, len(lines), 37):  # late: 3–14 s behind
        lines[i]["ts"] -= rng.randrange(3_000, 14_000)
    write("wind-zones", lines)


def door():
    # A registry of ten doors in three regions, then access events; the north has a burst.
    doors = {f"door-{i}": ("north" if i < 4 else "south" if i < 8 else "east") for i in range(10)}
    lines = [msg(T0, "POST_ATTRIBUTES_REQUEST", d, {"region": r, "site": f"site-{r}"}) for d, r in doors.items()]
    for t in range(0, 300_000, 1_500):
        door_id = rng.choice(list(doors))
        burst = 120_000 <= t < 180_000 and doors[door_id] == "north"
        event = "accessRejected" if burst or rng.random() < 0.15 else "accessGranted"
        lines.append(msg(T0 + t + 1, "POST_TELEMETRY_REQUEST", door_id, {"event": event, "badge": rng.randrange(1000)}))
    lines.append(msg(T0 + 300_500, "POST_TELEMETRY_REQUEST", "door-99", {"event": "accessRejected", "badge": 1}))
    write("door-disruption", lines)


def threshold():
    # Four sensors, one reading a second for five minutes, 5 % above 100; 10 % out of order
    # (up to 8 s behind) and a few far behind (beyond lateness + grace).
    lines = []
    for t in range(0, 300_000, 1_000):
        for s in range(4):
            value = round(rng.uniform(101, 150) if rng.random() < 0.05 else rng.uniform(20, 99), 2)
            lines.append(msg(T0 + t, "POST_TELEMETRY_REQUEST", f"sensor-{s}", {"value": value}, {"deviceName": f"sensor-{s}"}))
    for i in range(len(lines)):
        r = rng.random()
        if r < 0.10:
            lines[i]["ts"] -= rng.randrange(0, 8_000)
        elif r < 0.12:
            lines[i]["ts"] -= rng.randrange(20_000, 90_000)
    write("threshold-anomaly", lines)


def smart_meter():
    # Three LoRaWAN meters on The Things Network, an uplink every hour for two days, each with
    # four 15-minute readings of the energy register (Wh, u32 big-endian) after a header of
    # interval minutes and flags (see rules/uplink-decoder): ThingsBoard's TTN integration shape.
    import base64
    import datetime
    lines = []
    start = datetime.datetime(2024, 3, 1, 0, 0, tzinfo=datetime.timezone.utc)
    for m in range(3):
        register = 100_000 * (m + 1)
        for hour in range(1, 49):
            received = start + datetime.timedelta(hours=hour, seconds=m)
            readings = []
            for _ in range(4):
                register += rng.randrange(50, 400)
                readings.append(register)
            payload = bytes([15, 0]) + b"".join(r.to_bytes(4, "big") for r in readings)
            uplink = {
                "end_device_ids": {"device_id": f"meter-{m}", "dev_eui": f"70B3D57ED00000{m:02X}",
                                   "application_ids": {"application_id": "smart-meters"}},
                "received_at": received.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "uplink_message": {"f_port": 2, "frm_payload": base64.b64encode(payload).decode(),
                                   "rx_metadata": [{"gateway_ids": {"gateway_id": "gw-1"}, "rssi": -70 - m, "snr": 8.5}]},
            }
            ts = int(received.timestamp() * 1000)
            lines.append(msg(ts, "UPLINK", "TTN", uplink, {"integrationName": "TTN"}, entity="INTEGRATION"))
    lines.sort(key=lambda line: line["ts"])
    write("smart-meter", lines)


def solar():
    # The chain's generators make the data; an empty input runs them.
    (HERE / "solar-anomaly" / "input.jsonl").write_text("")


if __name__ == "__main__":
    wind()
    door()
    threshold()
    smart_meter()
    solar()
