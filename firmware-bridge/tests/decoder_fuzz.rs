//! Property tests of the frame decoder over random and truncated byte streams.

use gantry_firmware_bridge::protocol::{
    encode, Decoder, EStopState, Heartbeat, JointState, Joints, Message, MotorCommand, MAX_JOINTS, MAX_WIRE_FRAME,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Piece {
    Frame(Message),
    Garbage(Vec<u8>),
    /// The first `cut` bytes of a frame, without its closing delimiter.
    Truncated(Message, usize),
}

fn joints() -> impl Strategy<Value = Joints> {
    prop::collection::vec(-10.0f32..10.0, 0..=MAX_JOINTS).prop_map(|v| Joints::from_slice(&v).unwrap())
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (any::<u32>(), any::<u64>(), joints(), joints(), any::<u8>()).prop_map(|(seq, time_us, p, v, ok)| {
            Message::JointState(JointState { seq, time_us, positions_rad: p, velocities_rad_s: v, encoder_ok: ok })
        }),
        (any::<u32>(), any::<u64>(), joints(), 0.0f32..1.0).prop_map(|(seq, tick_us, t, g)| {
            Message::MotorCommand(MotorCommand { seq, tick_us, targets_rad: t, gripper: g })
        }),
        (any::<bool>(), any::<bool>()).prop_map(|(pressed, latched)| Message::EStop(EStopState { pressed, latched })),
        (any::<u32>(), any::<u32>()).prop_map(|(seq, uptime_ms)| Message::Heartbeat(Heartbeat { seq, uptime_ms })),
        Just(Message::EStopReset),
    ]
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        3 => message().prop_map(Piece::Frame),
        1 => prop::collection::vec(any::<u8>(), 1..200).prop_map(Piece::Garbage),
        1 => (message(), 2usize..40).prop_map(|(m, cut)| Piece::Truncated(m, cut)),
    ]
}

fn wire(m: &Message) -> Vec<u8> {
    let mut buf = [0u8; MAX_WIRE_FRAME];
    let n = encode(m, &mut buf).unwrap();
    buf[..n].to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100_000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Valid frames are all decoded, in order, whatever garbage or truncated
    /// frames stand between them and however the stream is split into reads;
    /// every piece of garbage that a frame cuts off is counted.
    #[test]
    fn frames_survive_garbage(pieces in prop::collection::vec(piece(), 1..12), split in 1usize..64) {
        // Garbage that happens to supply exactly the bytes a truncated frame
        // lacks completes it (the fuzzer found one: a 1-byte cut and a 1-byte
        // garbage equal to it); change its first byte so damage stays damage.
        let mut pieces = pieces;
        for i in 1..pieces.len() {
            let (before, after) = pieces.split_at_mut(i);
            if let (Piece::Truncated(m, cut), Piece::Garbage(g)) = (&before[i - 1], &mut after[0]) {
                let w = wire(m);
                let cut = (*cut).min(w.len() - 2).max(2);
                if g.starts_with(&w[cut..w.len() - 1]) {
                    g[0] ^= 0x55;
                }
            }
        }
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        let mut damaged = 0u64;
        for (i, p) in pieces.iter().enumerate() {
            let followed_by_frame = pieces[i + 1..].iter().any(|q| matches!(q, Piece::Frame(_)));
            match p {
                Piece::Frame(m) => {
                    stream.extend(wire(m));
                    expected.push(m.clone());
                }
                Piece::Garbage(g) => {
                    // Garbage with a non-zero byte right before the next frame's
                    // leading delimiter is at least one rejected frame.
                    if followed_by_frame && matches!(pieces.get(i + 1), Some(Piece::Frame(_))) && g.last() != Some(&0) {
                        damaged += 1;
                    }
                    stream.extend(g);
                }
                Piece::Truncated(m, cut) => {
                    let w = wire(m);
                    // At least one byte of the frame body is missing, not only its delimiter.
                    let cut = (*cut).min(w.len() - 2).max(2);
                    if matches!(pieces.get(i + 1), Some(Piece::Frame(_))) {
                        damaged += 1;
                    }
                    stream.extend(&w[..cut]);
                }
            }
        }
        let mut decoder = Decoder::new();
        let mut got = Vec::new();
        for chunk in stream.chunks(split) {
            decoder.push(chunk, |m| got.push(m));
        }
        let stats = decoder.stats();
        prop_assert_eq!(&got, &expected);
        prop_assert_eq!(stats.frames_ok, expected.len() as u64);
        prop_assert!(stats.rejected() >= damaged, "rejected {} < damaged {}", stats.rejected(), damaged);
    }

    /// Arbitrary bytes never panic the decoder, and nothing in them passes as a frame.
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let mut decoder = Decoder::new();
        let mut got = 0u64;
        decoder.push(&bytes, |_| got += 1);
        prop_assert_eq!(got, decoder.stats().frames_ok);
    }
}
