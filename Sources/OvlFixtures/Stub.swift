public enum FixtureStub {}
