"""Stage lifecycle: legal transitions as data, named threads, stop/drain, failures that still join."""
from __future__ import annotations

import threading

import pytest

from pipeline.runtime.lifecycle import TRANSITIONS, IllegalTransition, Stage, State, StateMachine


class Ticker(Stage):
    """Counts ticks until stopped; with drain it finishes the `backlog` first."""

    def __init__(self, name: str, backlog: int = 0):
        super().__init__("decode", name)
        self.backlog = backlog
        self.ticks = 0
        self.thread_seen = ""
        self.running = threading.Event()

    def run(self) -> None:
        self.thread_seen = threading.current_thread().name
        self.running.set()
        while not self.stop_requested:
            self.ticks += 1
            self.stop_event.wait(0.005)
        while self.drain and self.backlog:
            self.backlog -= 1


class Exploding(Stage):
    def run(self) -> None:
        raise RuntimeError("decoder crashed on packet 17")


def test_every_state_has_declared_transitions_and_terminal_states_have_none():
    assert set(TRANSITIONS) == set(State)
    assert TRANSITIONS[State.STOPPED] == TRANSITIONS[State.FAILED] == frozenset()


def test_illegal_transition_raises_and_names_the_owner_and_states():
    machine = StateMachine("decode:cam-3")
    with pytest.raises(IllegalTransition, match="decode:cam-3: cannot go from created to running"):
        machine.move(State.RUNNING)
    assert machine.state is State.CREATED


def test_state_changes_are_reported_to_the_listener():
    seen = []
    machine = StateMachine("x", on_change=lambda old, new: seen.append((old, new)))
    machine.move(State.STARTING)
    machine.move(State.RUNNING)
    assert seen == [(State.CREATED, State.STARTING), (State.STARTING, State.RUNNING)]


def test_stage_runs_in_a_named_thread_and_stops_on_request():
    stage = Ticker("cam-3")
    stage.start()
    assert stage.running.wait(2)
    assert stage.state is State.RUNNING and stage.thread_seen == "decode:cam-3"
    stage.stop()
    assert stage.join(2) is True
    assert stage.state is State.STOPPED and stage.ticks >= 1


def test_stop_with_drain_finishes_work_in_hand_and_without_drain_abandons_it():
    draining, abandoning = Ticker("a", backlog=5), Ticker("b", backlog=5)
    for stage, drain in ((draining, True), (abandoning, False)):
        stage.start()
        stage.running.wait(2)
        stage.stop(drain=drain)
        assert stage.join(2)
    assert draining.backlog == 0 and abandoning.backlog == 5


def test_exception_in_run_marks_the_stage_failed_and_join_still_returns():
    stage = Exploding("detect", "lane-default")
    stage.start()
    assert stage.join(2) is True
    assert stage.state is State.FAILED
    assert isinstance(stage.error, RuntimeError) and "packet 17" in str(stage.error)


def test_starting_twice_is_illegal():
    stage = Ticker("cam-1")
    stage.start()
    with pytest.raises(IllegalTransition):
        stage.start()
    stage.stop()
    assert stage.join(2)


def test_stage_stopped_before_start_cannot_start_and_joins_at_once():
    stage = Ticker("cam-2")
    stage.stop()
    assert stage.state is State.STOPPED and stage.join(0) is True
    with pytest.raises(IllegalTransition):
        stage.start()
    stage.stop()  # idempotent
