"""The online-gain benchmark compares like with like: same updates, same seed, same data."""
import importlib.util
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
spec = importlib.util.spec_from_file_location("odt_online_gain", os.path.join(REPO, "benchmarks", "odt_online_gain.py"))
og = importlib.util.module_from_spec(spec)
sys.modules["odt_online_gain"] = og
spec.loader.exec_module(og)


def _flags(cmd):
    return dict(a[2:].split("=", 1) for a in cmd if a.startswith("--config."))


def test_control_gets_the_same_updates_seed_and_data_but_no_env_steps():
    c = og.preset()
    for chunks in (12, 24):
        runs = og.commands("halfcheetah", "medium-replay", 3, chunks, 16, "/tmp/r")
        online, control = _flags(runs["online"][0]), _flags(runs["control"][0])
        total = c.odt.offline_updates + chunks * c.odt.online_updates_per_chunk
        assert int(control["config.odt.offline_updates"]) == total
        assert total % int(control["config.odt.offline_updates_per_chunk"]) == 0
        assert control["config.odt.online_chunks"] == "0" and online["config.odt.online_chunks"] == str(chunks)
        for key in ("config.seed", "config.dataset", "config.env.name", "config.odt.eval_envs"):
            assert online[key] == control[key]
        assert runs["online"][1] != runs["control"][1]


def test_summary_reads_offline_end_final_and_control_scores():
    online = [{"updates": 1000, "env_steps": 0, "phase": "offline", "score": 5.0},
              {"updates": 2000, "env_steps": 0, "phase": "offline", "score": 40.0},
              {"updates": 2600, "env_steps": 4000, "phase": "online", "score": 58.0},
              {"updates": 3200, "env_steps": 8000, "phase": "online", "score": 52.0}]
    control = [{"updates": 1600, "env_steps": 0, "phase": "offline", "score": 30.0},
               {"updates": 3200, "env_steps": 0, "phase": "offline", "score": 45.0}]
    s = og.summarise(online, control)
    assert (s["after_offline"], s["after_online"], s["best_online"], s["control"]) == (40.0, 52.0, 58.0, 45.0)
    assert s["gain_over_control"] == 7.0 and s["online_env_steps"] == 8000
