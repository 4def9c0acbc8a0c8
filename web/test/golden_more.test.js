// The other half of the model configurations' golden cases (see golden.test.js).
import { modelTests } from "./golden_helpers.js";

modelTests(1, 2);
