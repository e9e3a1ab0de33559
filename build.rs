fn main() {
    celerity_codegen::compile("schemas/tasks.yaml");
}
