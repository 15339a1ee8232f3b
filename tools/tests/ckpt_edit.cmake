# crisp ckpt ls/cat/rename/rm on a copy of the checkpoint a tiny MLP training run wrote (RUN).
set(ckpt ${RUN}/edit.safetensors)
file(COPY_FILE ${RUN}/checkpoint.safetensors ${ckpt})

function(crisp expect_rc pattern)
  execute_process(COMMAND ${CRISP} ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out
    ERROR_VARIABLE err)
  if(NOT rc EQUAL expect_rc OR NOT "${out}${err}" MATCHES "${pattern}")
    message(FATAL_ERROR "crisp ${ARGN}: exit ${rc} (expected ${expect_rc}), output does not "
      "match '${pattern}':\n${out}${err}")
  endif()
  set(last "${out}" PARENT_SCOPE)
endfunction()

crisp(0 "model\\.layers\\.1\\.weight +float32 +\\[256, 784\\] +802816\n" ckpt ls ${ckpt})
crisp(0 "opt\\.layers\\.1\\.weight\\.exp_avg +float32" ckpt ls ${ckpt})
crisp(0 "[0-9]+ tensors, [0-9]+ bytes" ckpt ls ${ckpt})
string(REGEX MATCH "([0-9]+) tensors, " _ "${last}")
set(count ${CMAKE_MATCH_1})
crisp(0 "\"format\": \"crisp-train/1\"" ckpt ls ${ckpt})
crisp(0 "model\\.layers\\.7\\.bias  float32  \\[10\\]\n\\[[-0-9.e]+(, [-0-9.e]+)+\\]\nmin " ckpt
  cat ${ckpt} model.layers.7.bias)
crisp(0 "\\.\\.\\. \\(200694 more\\) \\.\\.\\." ckpt cat ${ckpt} model.layers.1.weight --max 10)
crisp(0 "opt\\.layers\\.1\\.weight\\.step  int64  \\[\\]\n\\[[0-9]+\\]" ckpt cat ${ckpt}
  opt.layers.1.weight.step)
crisp(0 "renamed 2 tensors" ckpt rename ${ckpt} model.layers.7 model.head)
crisp(0 "model\\.head\\.bias" ckpt ls ${ckpt})
if(last MATCHES "model\\.layers\\.7")
  message(FATAL_ERROR "model.layers.7 still listed after the rename:\n${last}")
endif()
crisp(0 "renamed 1 tensor " ckpt rename ${ckpt} model.head.bias model.head_bias)
crisp(1 "'model\\.head_bias' already exists" ckpt rename ${ckpt} model.layers.1.bias
  model.head_bias)
crisp(1 "no tensor named 'nothing'.*nothing removed" ckpt rm ${ckpt} opt nothing)
crisp(0 "\n${count} tensors, " ckpt ls ${ckpt})
crisp(0 "removed [0-9]+ tensors from .*, 6 left" ckpt rm ${ckpt} opt)
crisp(0 "6 tensors" ckpt ls ${ckpt})
if(last MATCHES "opt\\.")
  message(FATAL_ERROR "optimizer state still listed after rm opt:\n${last}")
endif()
crisp(1 "no tensor named 'model.conv9'" ckpt cat ${ckpt} model.conv9)
