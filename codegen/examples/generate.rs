fn main() {
    let path = std::env::args().nth(1).unwrap();
    let source = std::fs::read_to_string(&path).unwrap();
    match celerity_codegen::generate_str(&source, &path) {
        Ok(code) => print!("{code}"),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1)
        }
    }
}
