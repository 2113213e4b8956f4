use std::time::Duration;

use super::JobTurn;

#[test]
fn one_watcher_of_a_job_takes_the_turn_per_interval() {
    let turn = JobTurn::default();
    let every = Duration::from_millis(50);
    assert!(turn.take_turn(every), "the first to ask takes the turn");
    assert!(
        !(0..99).any(|_| turn.take_turn(every)),
        "the others within the interval rely on it"
    );
    std::thread::sleep(every);
    assert!(
        turn.take_turn(every),
        "the next interval has a turn of its own"
    );
    assert!(!turn.take_turn(every));
}
