"""The outer loop's cadence arithmetic."""

from pyramidnet_tf.training import loop


def test_next_stop_lands_on_every_event():
  c = loop.Cadence(total_steps=100, steps_per_loop=30, log_every=7,
                   checkpoint_every=25, eval_every=40)
  stops, step = [], 0
  while step < 100:
    step = c.next_stop(step)
    stops.append(step)
  for every in (7, 25, 40):
    for k in range(every, 100, every):
      assert k in stops, (every, k)
  assert stops[-1] == 100
  assert all(b - a <= 30 for a, b in zip([0] + stops, stops))


def test_disabled_cadences_and_profile_window():
  c = loop.Cadence(total_steps=50, steps_per_loop=100, log_every=0,
                   checkpoint_every=0, eval_every=0, profile=(5, 9))
  assert c.next_stop(0) == 5
  assert c.next_stop(5) == 9
  assert c.next_stop(9) == 50
  assert not loop.Cadence.hit(10, 0)
  assert loop.Cadence.hit(10, 5) and not loop.Cadence.hit(11, 5)
