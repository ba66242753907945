// Every test file runs on the backend VLM_BACKEND names (default: the automatic choice, i.e.
// wasm with the OpenBLAS kernels where they are built). VLM_NO_BLAS=1 runs the stock kernels.
import { initBackend } from '../../layers/backend';

beforeAll(async () => {
  await initBackend();
});
