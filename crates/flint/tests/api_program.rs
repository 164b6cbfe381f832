//! api.md's whole program (minus the keyed line, which arrives with the shuffle) on
//! `local[2]`, with every answer checked against a plain computation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use flint::prelude::*;

const INPUT: &str =
    "the quick brown fox\njumps over a lazy dog\n\n   \nthe end of a story\nand the fox\n\n";

#[test]
fn the_api_program_gives_exact_answers_on_local_2() -> flint::Result<()> {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("input.txt");
    std::fs::write(&input, INPUT).unwrap();
    let out = tmp.path().join("out/words");

    let ctx = Context::builder()
        .app_name("demo")
        .master("local[2]")
        .conf("executor.memory", "512m")
        .get_or_create()?;

    let squares: Vec<u64> = ctx
        .parallelize((1..=10u64).collect(), 4)
        .map(|x| x * x)
        .collect()?;
    let total: Option<u64> = ctx
        .range(0, 1_000_000, 8)
        .map_with(3u64, |k, x| x * k)
        .reduce(|a, b| a + b)?;

    let lines = ctx.text_file(input.to_str().unwrap(), 8)?;
    let words = lines.flat_map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>());
    let words = words.cache();
    let n = words.count()?;
    let stop = ctx.broadcast(HashSet::from(["the".to_owned(), "a".to_owned()]))?;
    let kept = words
        .filter_with(stop, |s, w| !s.value().contains(w))
        .count()?;
    let empty = ctx.accumulator("empty lines");
    lines.foreach_with(empty.clone(), |acc, l| {
        if l.trim().is_empty() {
            acc.add(1)
        }
    })?;
    words.save_as_text_file(&out)?;

    // The same, computed plainly.
    let plain_words: Vec<&str> = INPUT.split_whitespace().collect();
    assert_eq!(squares, (1..=10u64).map(|x| x * x).collect::<Vec<_>>());
    assert_eq!(total, Some(3 * (0..1_000_000u64).sum::<u64>()));
    assert_eq!(n, plain_words.len() as u64);
    assert_eq!(n, 17);
    assert_eq!(
        kept,
        plain_words
            .iter()
            .filter(|w| !["the", "a"].contains(w))
            .count() as u64
    );
    assert_eq!(kept, 12);
    assert_eq!(
        empty.value(),
        INPUT.lines().filter(|l| l.trim().is_empty()).count() as u64
    );
    assert_eq!(empty.value(), 3);
    assert!(
        lines.num_partitions() >= 8,
        "{} splits",
        lines.num_partitions()
    );

    // out/words/part-00000, part-00001, …: every word once, in partition order.
    let mut parts: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    parts.sort();
    let expected_parts: Vec<String> = (0..words.num_partitions())
        .map(|p| format!("part-{p:05}"))
        .chain(["_SUCCESS".to_owned()])
        .collect();
    let mut expected_sorted = expected_parts.clone();
    expected_sorted.sort();
    assert_eq!(parts, expected_sorted);
    let mut saved = String::new();
    for p in expected_parts.iter().filter(|p| p.starts_with("part-")) {
        saved.push_str(&std::fs::read_to_string(out.join(p)).unwrap());
    }
    assert_eq!(saved.lines().collect::<Vec<_>>(), plain_words);

    println!("{squares:?} {total:?} {n} {kept} {}", empty.value());
    ctx.stop()?;
    Ok(())
}
