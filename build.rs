fn main() {
    celerity_codegen::compile("schemas/tasks.yaml");
    // A test fixture, not part of the application: the tasks of the Celery interop suite
    // (tests/interop_*.rs). Generated here because integration tests can only include
    // generated code from their package's OUT_DIR; the library never includes it.
    celerity_codegen::compile("tests/interop/interop.yaml");
}
