//! `roost-chat`: a Roost worker serving chat rooms. The same command line
//! as `roost-worker` (`--id`, `--listen`, `--store`, `--config`); the
//! room's settings are `kinds.room.settings` in the config file.

fn main() -> std::process::ExitCode {
    roost_worker::cli::main(roost_chat::kinds())
}
